#!/usr/bin/env python3
"""Print the first RSA key of a JWKS document as a PEM public key.

HAProxy's jwt_verify reads a PEM file (X.509 SubjectPublicKeyInfo), while
hanko-dev publishes its key as a JWK with `n` and `e`. This script converts
one to the other with a hand-written DER encoder, so the bench needs no
openssl binary. Usage: jwk_to_pem.py JWKS_FILE > key.pem. Standard library only; it
reads RSA keys only and does not validate the key beyond its shape.
"""

import base64
import json
import sys
import textwrap

# DER of AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }.
RSA_ALGORITHM_IDENTIFIER = bytes.fromhex("300d06092a864886f70d0101010500")


def der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + der_length(len(content)) + content


def der_unsigned_integer(value: bytes) -> bytes:
    value = value.lstrip(b"\x00") or b"\x00"
    # A set high bit would make the INTEGER negative, so pad with a zero.
    if value[0] & 0x80:
        value = b"\x00" + value
    return der(0x02, value)


def base64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: jwk_to_pem.py JWKS_FILE", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as jwks_file:
        keys = json.load(jwks_file).get("keys", [])
    rsa_keys = [key for key in keys if key.get("kty") == "RSA" and "n" in key and "e" in key]
    if not rsa_keys:
        print(f"jwk_to_pem.py: {sys.argv[1]} contains no RSA key with n and e", file=sys.stderr)
        return 1

    key = rsa_keys[0]
    rsa_public_key = der(
        0x30,
        der_unsigned_integer(base64url_decode(key["n"])) + der_unsigned_integer(base64url_decode(key["e"])),
    )
    # BIT STRING content starts with the number of unused bits, here 0.
    subject_public_key_info = der(0x30, RSA_ALGORITHM_IDENTIFIER + der(0x03, b"\x00" + rsa_public_key))
    body = base64.b64encode(subject_public_key_info).decode("ascii")
    print("-----BEGIN PUBLIC KEY-----")
    print("\n".join(textwrap.wrap(body, 64)))
    print("-----END PUBLIC KEY-----")
    return 0


if __name__ == "__main__":
    sys.exit(main())
