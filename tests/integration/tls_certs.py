"""Test certificates, made at test time with the openssl CLI into a temporary directory.

A test CA (ECDSA P-256) signs two server certificates, ECDSA P-256 and RSA-2048, each with the
names localhost, mail.test and 127.0.0.1 (and any extra names asked for), and one client
certificate. Nothing is ever written outside the directory; the keys are throwaway.

    certs = TestCerts()          # or TestCerts(names=["mx.example"])
    certs.ca                     # CA certificate (PEM): tls_ca_file, ssl cafile, -CAfile
    certs.ecdsa_chain, certs.ecdsa_key, certs.rsa_chain, certs.rsa_key
    certs.client_chain, certs.client_key
    certs.cleanup()
"""

import os
import shutil
import subprocess
import tempfile

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
NAMES = ["localhost", "mail.test", "127.0.0.1"]


def _openssl(*args, cwd):
    result = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {result.stderr.decode(errors='replace')}")


def _san(names):
    return ",".join(("IP:" if n.replace(".", "").isdigit() or ":" in n else "DNS:") + n
                    for n in names)


class TestCerts:
    def __init__(self, names=None, days=2):
        self.dir = tempfile.mkdtemp(prefix="relais-certs-")
        self.names = list(names or []) + NAMES
        d = self.dir

        def path(name):
            return os.path.join(d, name)
        self.ca, self.ca_key = path("ca.pem"), path("ca.key")
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", str(days),
                 "-subj", "/CN=Relais Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        self.ecdsa_leaf, self.ecdsa_key, self.ecdsa_chain = self._leaf(
            "ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], self.names[0],
            _san(self.names), "serverAuth", days)
        self.rsa_leaf, self.rsa_key, self.rsa_chain = self._leaf(
            "rsa", ["-newkey", "rsa:2048"], self.names[0], _san(self.names), "serverAuth", days)
        self.client_leaf, self.client_key, self.client_chain = self._leaf(
            "client", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], "client.test",
            "DNS:client.test", "clientAuth", days)
        # Every file readable by a peer that drops privileges (Postfix's smtpd runs as postfix).
        for name in os.listdir(d):
            os.chmod(path(name), 0o644)
        os.chmod(d, 0o755)

    def _leaf(self, name, newkey, cn, san, usage, days):
        d = self.dir
        key, csr = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.csr")
        leaf, chain = os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}-chain.pem")
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            f.write(f"subjectAltName = {san}\nextendedKeyUsage = {usage}\n"
                    "basicConstraints = critical,CA:FALSE\n"
                    "keyUsage = critical,digitalSignature,keyEncipherment\n")
        _openssl("req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr,
                 "-subj", f"/CN={cn}", cwd=d)
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                 "-CAcreateserial", "-out", leaf, "-days", str(days), "-sha256",
                 "-extfile", ext, cwd=d)
        with open(chain, "w") as out:  # Leaf first, then the CA (as servers send it).
            for part in (leaf, self.ca):
                with open(part) as f:
                    out.write(f.read())
        return leaf, key, chain

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_section(certs, handshake_timeout="10s", rsa=True, extra=""):
    """The [tls] table and one [[tls.certificate]] per chain (ECDSA, then RSA) for relaisd."""
    text = f'[tls]\nhandshake_timeout = "{handshake_timeout}"\n{extra}'
    pairs = [(certs.ecdsa_chain, certs.ecdsa_key)]
    if rsa:
        pairs.append((certs.rsa_chain, certs.rsa_key))
    for chain, key in pairs:
        text += f'[[tls.certificate]]\nchain = "{chain}"\nkey = "{key}"\n'
    return text


if __name__ == "__main__":
    print(TestCerts().dir)
