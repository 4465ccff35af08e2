"""An endpoint's HTTPS certificate (``-C https_cert``, ``-C https_key``): read on the client and
checked before anything is built, so a wrong file never leaves a half-made endpoint.

The key is a secret: it is held here only to be written where the front alone reads it, and
never appears in a label, a log or ``get``. The certificate chain is public: the front records
it, for ``get`` to describe and for the plugin's own checks to trust.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

KEYS = ("https_cert", "https_key")
_MAKE_ONE = ("For example, with your CA's files ca.pem and ca.key:\n"
             "  openssl req -new -newkey rsa:2048 -nodes -keyout endpoint.key -subj "
             "/CN={host} -addext subjectAltName={san} -out endpoint.csr\n"
             "  openssl x509 -req -in endpoint.csr -CA ca.pem -CAkey ca.key -days 365 "
             "-copy_extensions copy -out endpoint.pem")


@dataclass(frozen=True)
class Certificate:
    """A checked certificate chain (PEM, leaf first) and its private key (PEM)."""

    chain: bytes
    key: bytes = field(repr=False)

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain)[0]

    def pem(self) -> bytes:
        """What HAProxy's ``crt`` reads: the chain, then the key."""
        return self.chain.rstrip(b"\n") + b"\n" + self.key.rstrip(b"\n") + b"\n"


def pinned(chain: str) -> ssl.SSLContext:
    """A client context that trusts ``chain`` alone (its leaf as an anchor) and checks the
    host it connects to: the plugin's own checks of an endpoint whose certificate it knows,
    whichever CA signed it."""
    context = ssl.create_default_context(cadata=chain)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def describe(chain: str) -> dict[str, Any]:
    """What ``get`` shows of an endpoint's certificate: never its key."""
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    return {"names": names(leaf),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "sha256": hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()}


def load(cert_path: str, key_path: str) -> Certificate:
    """The certificate chain and key the two files hold, checked: both readable PEM, the key
    the certificate's, the certificate valid now. Each failure names the file and what to do."""
    chain_pem = _read(cert_path, "https_cert")
    key_pem = _read(key_path, "https_key")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise _invalid(f"-C https_cert={cert_path} holds no PEM certificate ({exc}). Give the "
                       "certificate in PEM (-----BEGIN CERTIFICATE-----), leaf first, then "
                       "its chain; `openssl x509 -in <file> -noout -text` shows what a file "
                       "holds.") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # encrypted: the front cannot ask for a passphrase
        raise _invalid(f"-C https_key={key_path} is encrypted; the front needs it without a "
                       "passphrase. Decrypt a copy: `openssl pkey -in "
                       f"{key_path} -out endpoint.key` (keep it readable only by you).") from exc
    except ValueError as exc:
        raise _invalid(f"-C https_key={key_path} holds no PEM private key ({exc}). Give the "
                       "key in PEM (-----BEGIN PRIVATE KEY-----); `openssl pkey -in <file> "
                       "-noout` checks one.") from exc
    leaf = chain[0]
    if leaf.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise _invalid(
            f"The certificate in -C https_cert={cert_path} does not match the key in -C "
            f"https_key={key_path}. Compare `openssl x509 -in {cert_path} -noout -pubkey` with "
            f"`openssl pkey -in {key_path} -pubout`: they must be the same.")
    now = datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc <= now:
        raise _invalid(
            f"The certificate in -C https_cert={cert_path} expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; clients would refuse it. Renew it "
            f"(`openssl x509 -in {cert_path} -noout -enddate` shows the date).")
    if leaf.not_valid_before_utc > now:
        raise _invalid(
            f"The certificate in -C https_cert={cert_path} is valid only from "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clock of the machine "
            "that made it, or wait until then.")
    return Certificate(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
                       key_pem)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_covers(certificate: Certificate, host: str, cert_path: str) -> None:
    """The certificate names ``host``, the host in the endpoint's URL, as clients check it
    (subjectAltName only, as Python's ssl and browsers do; one wildcard label at most)."""
    leaf = certificate.leaf
    if covers(leaf, host):
        return
    listed = ", ".join(names(leaf)) or "none (no subjectAltName)"
    san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
    raise _invalid(
        f"The certificate in -C https_cert={cert_path} does not name {host}, the host in the "
        f"endpoint's URL (its names: {listed}); clients would refuse it. Make one whose "
        f"subjectAltName includes {san}, or set -C host_address to a name it covers. "
        + _MAKE_ONE.format(host=host, san=san))


def covers(leaf: x509.Certificate, host: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    if _is_ip(host):
        return ipaddress.ip_address(host) in extension.value.get_values_for_type(x509.IPAddress)
    return any(_dns_match(name.lower().rstrip("."), host)
               for name in extension.value.get_values_for_type(x509.DNSName))


def names(leaf: x509.Certificate) -> list[str]:
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [*extension.value.get_values_for_type(x509.DNSName),
            *map(str, extension.value.get_values_for_type(x509.IPAddress))]


def _dns_match(pattern: str, host: str) -> bool:
    if not pattern.startswith("*."):
        return pattern == host
    first, _, rest = host.partition(".")
    return bool(first) and rest == pattern[2:]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise _invalid(f"Cannot read -C {key}={path}: {exc.strerror or exc}. Give a PEM file "
                       "this user can read (`ls -l` shows its owner and mode).") from exc


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)
