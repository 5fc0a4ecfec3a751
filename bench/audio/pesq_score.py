"""pesq_score.py REF.wav DEG.wav - print the wideband PESQ (MOS-LQO) of
DEG against REF, both 16 kHz mono 16-bit, with the `pesq` package (ITU-T
P.862.2). Used by chinwag-bench's audio workload; bench/audio/pesq.sh
installs the package in a virtual environment."""

import sys
import wave

import numpy
from pesq import pesq


def read(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit("%s: need 16 kHz mono 16-bit" % path)
        return numpy.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(numpy.float32)


print("%.3f" % pesq(16000, read(sys.argv[1]), read(sys.argv[2]), "wb"))
