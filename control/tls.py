"""The control service's own certificate authority and the certificates it signs (HTTPS, MQTT over TLS).

On the first start with ``--tls auto`` the server creates, in its data dir:

* ``tls/ca.pem`` and ``tls/ca.key``: a CA (EC P-256, 10 years) that clients and agents trust
  (``glusterctl login --ca``, ``glusterctl agent --mqtt-ca``);
* ``tls/server.pem`` and ``tls/server.key``: the server certificate (2 years) for every name it
  is reached by: localhost, 127.0.0.1, ::1, this host's names and the listen addresses. It is
  issued again, by the same CA, when a listen address it does not name is configured.

Key files are mode 0600. ``fingerprint`` is the SHA-256 of the CA certificate, printed at start
so a user can compare it with the file they were handed.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.messages import node_named_by, node_uri

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 730
RENEW_BEFORE_DAYS = 30
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class TlsError(Exception):
    """A certificate or key cannot be read or made; the message says which file and why."""


@dataclass(frozen=True)
class ServerCert:
    cert: str  # PEM file with the certificate
    key: str  # PEM file with its private key
    ca: str | None  # the CA that signed it, when the server made it itself

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load the certificate {self.cert} with the key {self.key}: {exc}") from None
        return context


def _write_private(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def load_cert(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as fh:
            return x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the certificate {path}: {exc}") from None


def fingerprint(path: str) -> str:
    """SHA-256 of a PEM certificate, as colon-separated hex (what ``openssl x509 -fingerprint -sha256`` shows)."""
    digest = load_cert(path).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def ensure_ca(directory: str) -> tuple[str, str]:
    """The CA certificate and key paths in ``directory``, created on the first call."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert_path, key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"glusterctl CA {socket.gethostname()}"[:64])])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("created the certificate authority %s (SHA-256 %s)", cert_path, fingerprint(cert_path))
    return cert_path, key_path


def wanted_names(listen_hosts: list[str]) -> list[str]:
    """The names and addresses a server certificate should carry."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    names += [h for h in listen_hosts if h not in WILDCARD_HOSTS]
    out: list[str] = []
    for n in names:
        if n and n not in out:
            out.append(n)
    return out


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _covers(cert: x509.Certificate, names: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return all(n in have for n in names)


def _load_ca(cert_path: str, key_path: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = load_cert(cert_path)
    try:
        with open(key_path, "rb") as fh:
            ca_key = serialization.load_pem_private_key(fh.read(), password=None)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the CA key {key_path}: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"the CA key {key_path} is not an EC key")
    return ca_cert, ca_key


def issue_server_cert(directory: str, listen_hosts: list[str]) -> ServerCert:
    """The server certificate signed by the CA in ``directory`` (both made when missing, stale or too narrow)."""
    ca_cert_path, ca_key_path = ensure_ca(directory)
    cert_path, key_path = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
    names = wanted_names(listen_hosts)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        current = load_cert(cert_path)
        fresh = current.not_valid_after_utc - _now() > datetime.timedelta(days=RENEW_BEFORE_DAYS)
        if fresh and _covers(current, names):
            return ServerCert(cert_path, key_path, ca_cert_path)
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("issued the server certificate %s for %s", cert_path, ", ".join(names))
    return ServerCert(cert_path, key_path, ca_cert_path)


def client_context(ca: str | None) -> ssl.SSLContext:
    """A client's TLS context: verify against ``ca`` (a PEM file), or the system's CAs."""
    try:
        context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use {ca} as CA certificate: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# ---- node certificates: an enrolment credential instead of the join token ---------------------
NODE_DAYS = 365
NODE_MAX_DAYS = 3 * 365


def node_of_certificate(cert: x509.Certificate) -> tuple[str, str] | None:
    """The (cluster, node) a node certificate names, or None when it names none (or several)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return node_named_by(san.get_values_for_type(x509.UniformResourceIdentifier))


def sign_node_csr(directory: str, csr_pem: str, cluster: str, node: str, days: int = NODE_DAYS) -> str:
    """A client certificate for ``node`` of ``cluster``, signed by the server's own CA in ``directory``.

    Only the CSR's public key is used (its signature proves the requester holds the key); the
    subject and names are the control service's, never the requester's.
    """
    if not 1 <= days <= NODE_MAX_DAYS:
        raise TlsError(f"a node certificate is valid 1 to {NODE_MAX_DAYS} days, not {days}")
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise TlsError(
            "not a PEM certificate signing request: make one with 'openssl req -new -newkey ec "
            "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout node.key -subj /CN=NODE -out node.csr'"
        ) from None
    if not csr.is_signature_valid:
        raise TlsError("the certificate signing request's signature does not verify")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise TlsError("the request's key must be EC, Ed25519 or RSA")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise TlsError(f"the request's RSA key has {public.key_size} bits: use 2048 or more (or an EC key)")
    ca_cert_path, ca_key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    if not (os.path.exists(ca_cert_path) and os.path.exists(ca_key_path)):
        raise TlsError(
            "this server has no CA of its own to sign node certificates: it makes one with --tls auto or --mqtts"
        )
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(node_uri(cluster, node))]), critical=False
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def verify_node_certificate(ca_path: str, pem: str) -> tuple[str, str, x509.Certificate]:
    """(cluster, node, certificate) of a node certificate issued by the CA in ``ca_path``; TlsError why not."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise TlsError("the node certificate is not a PEM certificate") from None
    ca = load_cert(ca_path)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TlsError("the node certificate is not signed by this control service's CA") from None
    now = _now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TlsError(f"the node certificate is not valid now (valid until {cert.not_valid_after_utc:%Y-%m-%d})")
    named = node_of_certificate(cert)
    if named is None:
        raise TlsError("the certificate names no glusterctl node (it is not a node certificate)")
    return named[0], named[1], cert


def check_signature(cert: x509.Certificate, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` over ``message`` was made with the key of ``cert`` (EC: ECDSA, Ed25519, RSA: PKCS#1 v1.5)."""
    public = cert.public_key()
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, message)
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True
