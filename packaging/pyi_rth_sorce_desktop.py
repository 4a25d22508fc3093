"""PyInstaller runtime hook: runs inside the frozen app before any of its code.

Sets up what a plain ``pip install`` gets from the Python installation and a frozen app does not:
- std streams: a windowed executable (Windows/macOS, console=False) has ``sys.stdout``/``sys.stderr``
  set to None, and the first ``print`` or logging call would raise. They go to the null device.
- resources: ``SORCE_DESKTOP_RESOURCES`` points at the bundled resources/ folder (icon SVG, .desktop file),
  so code that looks for them finds them in ``sys._MEIPASS`` rather than beside a source checkout.
- SSL certificates for the model download: the bundle carries its own OpenSSL, whose compiled-in CA paths
  are those of the build machine. When neither the user (SSL_CERT_FILE / SSL_CERT_DIR) nor that OpenSSL nor
  the usual Linux locations provide CA certificates (typical on macOS and on unusual Linux layouts), the
  bundled certifi CA file is used. A system store that exists is kept (corporate CAs live there).
Qt plugin paths are set by PyInstaller's own PySide6 runtime hook; multiprocessing's freeze support is
called first thing in entry.py.
"""

import os
import sys

_LINUX_CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine
)


def _system_ca_available() -> bool:
    import ssl

    if sys.platform == "win32":
        return True  # ssl.create_default_context() reads the Windows certificate store itself
    paths = ssl.get_default_verify_paths()
    if paths.cafile or (paths.capath and os.listdir(paths.capath)):
        return True
    return sys.platform.startswith("linux") and any(os.path.isfile(p) for p in _LINUX_CA_CANDIDATES)


def _setup() -> None:
    base = getattr(sys, "_MEIPASS", None)
    if base is None:
        return
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    resources = os.path.join(base, "resources")
    if os.path.isdir(resources):
        os.environ.setdefault("SORCE_DESKTOP_RESOURCES", resources)
    if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        try:
            use_certifi = not _system_ca_available()
        except Exception:
            use_certifi = True
        ca = os.path.join(base, "certifi", "cacert.pem")
        if use_certifi and os.path.isfile(ca):
            os.environ["SSL_CERT_FILE"] = ca
            os.environ["SORCE_DESKTOP_CA_SOURCE"] = "certifi"  # reported by --bundle-check
        else:
            os.environ["SORCE_DESKTOP_CA_SOURCE"] = "system"


_setup()
