"""Certificates for the HTTPS tests, made as the README tells users to make them: a CA of one's
own, and a certificate it signs for the endpoint's host, with ``openssl``. An expired one
cannot be made so (``openssl x509 -req`` has no start date before 3.4): ``cryptography``
signs that one."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path) -> Pair:
    """A CA: ``ca.pem`` and ``ca.key``."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "30", "-subj", "/CN=test CA", cwd=directory)
    return Pair(directory / "ca.pem", directory / "ca.key")


def make_cert(directory: Path, ca: Pair, stem: str, host: str) -> Pair:
    """A certificate for ``host`` signed by ``ca``: the README's two commands."""
    san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{stem}.key", "-subj",
             f"/CN={host}", "-addext", f"subjectAltName={san}", "-out", f"{stem}.csr",
             cwd=directory)
    _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-days", "30", "-copy_extensions", "copy", "-out", f"{stem}.pem", cwd=directory)
    (directory / f"{stem}.key").chmod(0o600)
    return Pair(directory / f"{stem}.pem", directory / f"{stem}.key")


def make_expired(directory: Path, host: str) -> Pair:
    """A self-signed certificate for ``host`` that expired yesterday."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.IPAddress(ipaddress.ip_address(host)) if _is_ip(host) else x509.DNSName(host)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(key, hashes.SHA256()))
    pair = Pair(directory / "expired.pem", directory / "expired.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return pair


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
