"""
Certificates for TLS tests, made at test time with C{cryptography}: no key
material is kept in the repository, and nothing expires.

    paths = write_pki(tmp_directory)
    f"ssl:0:interface=127.0.0.1:privateKey={paths.server_key}:certKey={paths.server_cert}"
    f"tls:host=localhost:port={port}:trustRoots={paths.trust_dir}"

What is made (once per test session; every call of L{write_pki} writes the
same certificates into the directory it is given):

  - a CA, and signed by it: a server certificate for C{localhost} and
    127.0.0.1, a server certificate whose only name is C{otherhost}, and a
    client certificate;
  - an unrelated "other CA", and a client certificate signed by it.

Keys are ECDSA P-256 (quick to make), unencrypted PEM (PKCS #8).
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The names in the good server certificate.
SERVER_DNS_NAME = "localhost"
SERVER_IP = "127.0.0.1"
#: The only name in the "wrong name" server certificate.
WRONG_DNS_NAME = "otherhost"


@dataclass(frozen=True)
class Credential:
    """One certificate and its private key, both PEM bytes."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class PKI:
    """Every credential the TLS tests use, in memory (see L{make_pki})."""

    ca: Credential
    server: Credential
    wrong_name_server: Credential
    client: Credential
    other_ca: Credential
    other_client: Credential


@dataclass(frozen=True)
class PKIPaths:
    """
    Where L{write_pki} wrote the PEM files; every attribute is an absolute path.

    @ivar trust_dir: a directory holding only C{ca.pem}, for the C{tls:}
        endpoint's C{trustRoots=} (Twisted loads every C{*.pem} file there).
    @ivar other_trust_dir: the same, holding only the other CA.
    """

    directory: str
    ca_cert: str
    server_cert: str
    server_key: str
    wrong_name_cert: str
    wrong_name_key: str
    client_cert: str
    client_key: str
    other_ca_cert: str
    other_client_cert: str
    other_client_key: str
    trust_dir: str
    other_trust_dir: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rpisensor tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key, issuer_public_key
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    )


def make_ca(common_name: str) -> tuple[Credential, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA: its credential, key and certificate object (to sign with)."""
    key = _key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(key, hashes.SHA256())
    )
    return Credential(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = True,
) -> Credential:
    """
    A certificate signed by the CA C{ca_key}/C{ca_cert}, for a server (with
    C{dns_names} and C{ip_addresses} as subject alternative names) or, with
    C{server=False}, for a client.
    """
    key = _key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Credential(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@functools.cache
def make_pki() -> PKI:
    """Every credential the tests use; made once per process, then reused."""
    ca, ca_key, ca_cert = make_ca("rpisensor test CA")
    other_ca, other_key, other_cert = make_ca("rpisensor other test CA")
    return PKI(
        ca=ca,
        server=make_leaf(ca_key, ca_cert, SERVER_DNS_NAME, (SERVER_DNS_NAME,), (SERVER_IP,)),
        wrong_name_server=make_leaf(ca_key, ca_cert, WRONG_DNS_NAME, (WRONG_DNS_NAME,)),
        client=make_leaf(ca_key, ca_cert, "rpisensor test client", server=False),
        other_ca=other_ca,
        other_client=make_leaf(other_key, other_cert, "rpisensor stranger", server=False),
    )


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_pki(directory: str | os.PathLike) -> PKIPaths:
    """
    Write the session's certificates and keys (L{make_pki}) as PEM files into
    C{directory}, which is created if needed, and return their paths.
    """
    pki = make_pki()
    base = os.path.abspath(os.fspath(directory))
    trust_dir = os.path.join(base, "trust")
    other_trust_dir = os.path.join(base, "other-trust")
    for d in (base, trust_dir, other_trust_dir):
        os.makedirs(d, exist_ok=True)

    def at(name: str, data: bytes) -> str:
        return _write(os.path.join(base, name), data)

    paths = PKIPaths(
        directory=base,
        ca_cert=at("ca.pem", pki.ca.cert_pem),
        server_cert=at("server.crt.pem", pki.server.cert_pem),
        server_key=at("server.key.pem", pki.server.key_pem),
        wrong_name_cert=at("otherhost.crt.pem", pki.wrong_name_server.cert_pem),
        wrong_name_key=at("otherhost.key.pem", pki.wrong_name_server.key_pem),
        client_cert=at("client.crt.pem", pki.client.cert_pem),
        client_key=at("client.key.pem", pki.client.key_pem),
        other_ca_cert=at("other-ca.pem", pki.other_ca.cert_pem),
        other_client_cert=at("other-client.crt.pem", pki.other_client.cert_pem),
        other_client_key=at("other-client.key.pem", pki.other_client.key_pem),
        trust_dir=trust_dir,
        other_trust_dir=other_trust_dir,
    )
    _write(os.path.join(trust_dir, "ca.pem"), pki.ca.cert_pem)
    _write(os.path.join(other_trust_dir, "other-ca.pem"), pki.other_ca.cert_pem)
    return paths


def escape(path: str) -> str:
    """C{path} escaped for a Twisted endpoint string (C{:}, C{=} and C{\\} are special)."""
    return path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
