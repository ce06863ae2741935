"""Exim 4 as a real SMTP client of relaisd, for interoperability tests.

Exim is unpacked by tools/fetch-exim.sh (never installed: it conflicts with Postfix) into
build/peers/exim or $EXIM_ROOT. Each EximClient has a private directory with its own
configuration (-C), spool and logs, and one router that sends every address to relaisd on
loopback. nss_wrapper supplies the "Debian-exim" user the binary insists on, mapped to the
calling user (nobody when that is root, which Exim refuses), so nothing on the system changes.
"""

import glob
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
EXIM_ROOT = os.environ.get("EXIM_ROOT",
                           os.path.join(HERE, "..", "..", "build", "peers", "exim"))


def _find(name):
    for base in (os.path.join(EXIM_ROOT, "usr", "lib"), "/usr/lib"):
        hits = glob.glob(os.path.join(base, "*", name)) + glob.glob(os.path.join(base, name))
        if hits:
            return hits[0]
    return None


EXIM = os.path.join(EXIM_ROOT, "usr", "sbin", "exim4")
NSS_WRAPPER = _find("libnss_wrapper.so")


def available():
    return os.access(EXIM, os.X_OK) and NSS_WRAPPER is not None


class EximClient:
    def __init__(self, relay_port, chunking=True):
        self.dir = tempfile.mkdtemp(prefix="relais-exim-")
        os.chmod(self.dir, 0o777)  # Exim writes its spool as the user it maps to.
        uid = os.getuid() if os.getuid() != 0 else 65534
        gid = os.getgid() if os.getuid() != 0 else 65534
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write(f"root:x:0:0:root:/root:/bin/sh\nDebian-exim:x:{uid}:{gid}::/:/bin/false\n")
        with open(os.path.join(self.dir, "group"), "w") as f:
            f.write(f"root:x:0:\nDebian-exim:x:{gid}:\n")
        libs = os.pathsep.join(os.path.dirname(p) for p in glob.glob(
            os.path.join(EXIM_ROOT, "usr", "lib", "*", "libidn.so*")))
        self.env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER,
                        NSS_WRAPPER_PASSWD=os.path.join(self.dir, "passwd"),
                        NSS_WRAPPER_GROUP=os.path.join(self.dir, "group"),
                        LD_LIBRARY_PATH=libs)
        self.config = os.path.join(self.dir, "exim.conf")
        with open(self.config, "w") as f:
            f.write(f"""exim_path = {os.path.abspath(EXIM)}
keep_environment = LD_PRELOAD : LD_LIBRARY_PATH : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
primary_hostname = exim.test
qualify_domain = exim.test
spool_directory = {self.dir}/spool
log_file_path = {self.dir}/%slog
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
begin routers
relais:
  driver = manualroute
  domains = *
  transport = relais_smtp
  route_list = * 127.0.0.1 byname
  self = send
begin transports
relais_smtp:
  driver = smtp
  port = {relay_port}
  hosts_try_chunking = {"*" if chunking else ":"}
  hosts_avoid_tls = *
  allow_localhost
begin retry
* * F,1m,1m
""")

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, *args, stdin=b"", timeout=60):
        return subprocess.run([EXIM, "-C", self.config, *args], input=stdin, env=self.env,
                              capture_output=True, timeout=timeout)

    def send(self, sender, recipients, message):
        """Submits `message` and delivers it in the foreground (-odi), as one SMTP session."""
        return self.run("-odi", "-v", "-f", sender, *recipients, stdin=message)

    def main_log(self):
        try:
            with open(os.path.join(self.dir, "mainlog"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def queue_count(self):
        return int(self.run("-bpc").stdout.decode().strip() or 0)
