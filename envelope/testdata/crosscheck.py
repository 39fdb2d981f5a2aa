#!/usr/bin/env python3
"""Independent envdr v1 reader written from docs/FORMAT.md alone, to cross-check the spec
against the Go implementation's known-answer vectors. Needs the `cryptography` package.

    python3 envelope/testdata/crosscheck.py
"""
import base64, glob, hashlib, hmac, os, struct, sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def hkdf(ikm, salt, info, length=32):
    prk = hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()
    t, okm, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def stream(n):
    seed, out, c = hashlib.sha256(b"envdr test payload").digest(), b"", 0
    while len(out) < n:
        out += hashlib.sha256(seed + struct.pack("<Q", c)).digest()
        c += 1
    return out[:n]


def open_envelope(data, dek):
    assert data[:8] == b"\x89ENVDR\r\n" and data[8] == 1, "magic/version"
    hl = struct.unpack(">I", data[9:13])[0]
    cs = struct.unpack(">I", data[14:18])[0]
    salt, com = data[18:50], data[50:82]
    assert hmac.compare_digest(com, hkdf(dek, b"", b"envdr v1 key commitment")), "commitment"
    aead = AESGCM(hkdf(dek, salt, b"envdr v1 payload key"))
    aad = hashlib.sha256(data[:hl]).digest()
    rest, pt, i, enc = data[hl:], b"", 0, cs + 16
    while True:
        final = len(rest) <= enc
        chunk, rest = rest[:enc], rest[enc:]
        nonce = b"\0\0\0" + struct.pack(">Q", i) + bytes([1 if final else 0])
        pt += aead.decrypt(nonce, chunk, aad)
        i += 1
        if final:
            return pt, i


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    n = 0
    for f in sorted(glob.glob(os.path.join(here, "vectors", "success_*.txt"))):
        head, body = open(f).read().split("\n\n", 1)
        kv = dict(line.split(": ", 1) for line in head.splitlines())
        pt, chunks = open_envelope(base64.b64decode(body.replace("\n", "")), bytes.fromhex(kv["dek"]))
        assert pt == stream(int(kv["payload-size"])), f
        assert hashlib.sha256(pt).hexdigest() == kv["payload-sha256"], f
        print(f"ok {os.path.basename(f)}: {len(pt)} bytes, {chunks} chunks")
        n += 1
    if n == 0:
        sys.exit("no vectors found")
    print(f"{n} vectors opened independently")


if __name__ == "__main__":
    main()
