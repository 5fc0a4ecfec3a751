"""The ctypes signatures match include/chinwag.h, both ways: every C
function has one, and each restype and argtype fits the C type."""

import ctypes
import re
from typing import Any, Dict, List, Tuple

from chinwag import _native

SCALARS: Dict[str, Any] = {
    "int": ctypes.c_int,
    "int32_t": ctypes.c_int32,
    "uint8_t": ctypes.c_uint8,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "int64_t": ctypes.c_int64,
    "size_t": ctypes.c_size_t,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
}


def prototypes(header: str) -> Dict[str, Tuple[str, List[str]]]:
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    out = {}
    for m in re.finditer(r"([A-Za-z_][\w \*]*?)\b(cw_\w+)\(([^)]*)\);", text):
        ret, name, args = m.group(1).strip(), m.group(2), m.group(3).strip()
        params = [] if args in ("", "void") else [a.strip() for a in args.split(",")]
        # Drop the parameter names: "const char *host" -> "const char *".
        types = [re.sub(r"\s*\b\w+$", "", p).replace(" *", "*").strip() for p in params]
        out[name] = (ret.replace(" *", "*"), types)
    return out


def accepts(c_type: str, py_type: Any) -> bool:
    c_type = " ".join(c_type.split())
    if c_type == "void":
        return py_type is None
    if c_type.startswith("enum "):
        return py_type is ctypes.c_int
    if c_type in SCALARS:
        return py_type is SCALARS[c_type]
    if c_type in ("const char*", "char*"):
        return py_type in (ctypes.c_char_p, ctypes.c_void_p)
    if c_type.endswith("**"):
        return py_type in (ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_char_p))
    if c_type.endswith("*"):
        base = c_type[:-1].replace("const ", "").strip()
        if base in SCALARS:
            return py_type in (ctypes.POINTER(SCALARS[base]), ctypes.c_void_p, ctypes.c_char_p)
        return py_type in (ctypes.c_void_p, ctypes.c_char_p)
    return False


def test_every_function_has_a_matching_signature(header: str) -> None:
    protos = prototypes(header)
    assert len(protos) > 90, "the parser found the header's functions"
    sigs = {name: (res, args) for name, res, args in _native.SIGNATURES}
    assert sorted(set(protos) - set(sigs)) == [], "functions without a ctypes signature"
    assert sorted(set(sigs) - set(protos)) == [], "signatures of functions the header lacks"
    for name, (ret, args) in protos.items():
        res, argtypes = sigs[name]
        assert accepts(ret, res), "%s returns %s, ctypes says %r" % (name, ret, res)
        assert len(args) == len(argtypes), "%s takes %d arguments" % (name, len(args))
        for i, (c, p) in enumerate(zip(args, argtypes)):
            assert accepts(c, p), "%s argument %d is %s, ctypes says %r" % (name, i, c, p)


def test_the_checker_catches_a_wrong_type() -> None:
    assert not accepts("uint64_t", ctypes.c_uint16)
    assert not accepts("const char*", ctypes.POINTER(ctypes.c_int))
    assert not accepts("void", ctypes.c_int)
    assert accepts("struct cw_client**", ctypes.POINTER(ctypes.c_void_p))


def test_audio_stats_matches_the_c_struct(header: str) -> None:
    """AudioStats has cw_audio_stats's fields, in order, with their types
    (fields are only ever appended, so older callers keep their offsets)."""
    from chinwag import AudioStats

    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    body = re.search(r"typedef struct cw_audio_stats \{(.*?)\} cw_audio_stats;", text, re.S)
    assert body is not None
    fields = re.findall(r"(\w+)\s+(\w+);", body.group(1))
    assert [(name, SCALARS[c]) for c, name in fields] == list(AudioStats._fields_)
