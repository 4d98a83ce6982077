"""A node certificate (``glusterctl node certificate``) as the enrolment credential instead of the join token.

The agent presents the certificate to the embedded broker's TLS listener, which lets it log in
as its cluster's enrolment user for that one node; the enrolment hello carries the certificate
and a signature with its key over the hello and the agent's new secret, which the control
service checks against its CA before it accepts the secret.
"""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from broker.messages import node_named_by


class CertificateError(ValueError):
    """The certificate or its key cannot be read or used."""


def _load(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as fh:
            return x509.load_pem_x509_certificate(fh.read())
    except OSError as exc:
        raise CertificateError(f"cannot read the node certificate {path}: {exc.strerror}") from None
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


def certificate_node(path: str) -> tuple[str, str] | None:
    """The (cluster, node) the node certificate at ``path`` was issued for, or None when it names none."""
    try:
        san = _load(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return node_named_by(san.get_values_for_type(x509.UniformResourceIdentifier))


def certificate_proof(cert_path: str, key_path: str, message: bytes) -> tuple[str, str, str]:
    """(certificate PEM, its SHA-256 in hex, base64 signature of ``message`` with its key)."""
    cert = _load(cert_path)
    try:
        with open(key_path, "rb") as fh:
            key = serialization.load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        raise CertificateError(f"cannot read the key {key_path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{key_path} is not an unencrypted PEM private key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise CertificateError(f"the key {key_path} must be EC, Ed25519 or RSA")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return pem, cert.fingerprint(hashes.SHA256()).hex(), base64.b64encode(signature).decode()
