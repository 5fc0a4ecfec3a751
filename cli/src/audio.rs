//! Where a call's sound goes. Today the client sets calls up and tears them
//! down but plays and records nothing: call audio (Opus, jitter buffer,
//! devices) is being added to the library (`libclient/audio/`), and will
//! plug in here: `CallAudio::start` is the one place that gets the open
//! call (babel) or the voice socket and the peer's end point (accounts).

use std::net::{SocketAddr, UdpSocket};

use chinwag::Call;

/// What the user is told about a call's sound until audio exists.
pub const NO_SOUND: &str = "no sound yet: call audio is not in this build";

/// The transport of one call this client takes part in.
pub enum Voice {
    /// Babel: the peer-to-peer connection carrying VoiceData payloads.
    Babel(Call),
    /// Accounts: our UDP voice socket, and the peer's once it answered.
    Accounts {
        socket: UdpSocket,
        peer: Option<SocketAddr>,
    },
}

/// One call's audio. Holding it keeps the call's transport open;
/// dropping it hangs a babel call up.
pub struct CallAudio {
    pub voice: Voice,
}

impl CallAudio {
    /// Start the audio of an established call. With no audio engine yet,
    /// this only keeps the transport; it says so to the user.
    pub fn start(voice: Voice) -> (CallAudio, &'static str) {
        (CallAudio { voice }, NO_SOUND)
    }

    /// One line about the call's transport, for `/calls`.
    pub fn describe(&self) -> String {
        match &self.voice {
            Voice::Babel(call) => format!("babel call with {} ({NO_SOUND})", call.peer()),
            Voice::Accounts { socket, peer } => {
                let here = socket.local_addr().map(|a| a.port()).unwrap_or(0);
                match peer {
                    Some(p) => format!("voice on udp port {here}, peer at {p} ({NO_SOUND})"),
                    None => format!("voice on udp port {here}, not answered yet"),
                }
            }
        }
    }

    /// The peer's UDP end point is known (accounts: the call was answered).
    pub fn set_peer(&mut self, addr: SocketAddr) {
        if let Voice::Accounts { peer, .. } = &mut self.voice {
            *peer = Some(addr);
        }
    }
}
