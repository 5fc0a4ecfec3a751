//! Any text as a configuration file, and any two parsed configurations
//! compared: parsing, validation, the admin socket's path and the list of
//! changed keys may refuse, never panic; whatever validates round-trips.
#![no_main]
use chinwagd::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two files in one input, split at the first NUL.
    let (a, b) = text.split_once('\0').unwrap_or((text, ""));
    let parsed: Vec<Config> = [a, b]
        .into_iter()
        .filter_map(|t| Config::from_toml(t).ok())
        .collect();
    for c in &parsed {
        let _ = c.admin_socket_path();
        let _ = c.login_timeout();
        let _ = c.write_timeout();
        let _ = c.connect_id_ttl();
        if c.validate().is_ok() {
            let again = toml::to_string(c).expect("a valid configuration serialises");
            assert_eq!(&Config::from_toml(&again).expect("and parses back"), c);
        }
        assert!(c.changed_keys(c).is_empty());
        assert!(c.changed_keys(&Config::default()).len() <= 32);
    }
    if let [x, y] = parsed.as_slice() {
        assert_eq!(x.changed_keys(y), y.changed_keys(x));
    }
});
