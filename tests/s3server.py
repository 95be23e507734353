"""A real S3 HTTP server on loopback for the tests and the benchmark: moto in server mode, in its own process.

Plain Python, no Odoo and no pytest: the Odoo tests (``tests/common.py``), the
engine tests (``tests/engine/conftest.py``) and ``bench/run.py`` share it.
moto's server runs from its own virtual environment (``.venv-s3`` in the
addon): ``moto[server]`` brings Werkzeug 3, which breaks Odoo 17's Werkzeug.
"""

import os
import socket
import subprocess
import time
import urllib.request

ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Test credentials the server accepts; the clients of the tests use them too.
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoServerError(RuntimeError):
    """moto's server exited or did not answer in time."""


def moto_server_path(honour_override=True):
    """Where moto's server should be: ``SPP_MOTO_SERVER`` when set (and honoured), else ``.venv-s3`` in the addon."""
    override = os.environ.get("SPP_MOTO_SERVER") if honour_override else None
    return override or os.path.join(ADDON_DIR, ".venv-s3", "bin", "moto_server")


def moto_server_command(honour_override=True):
    """The path of moto's server when it is an executable file, else None."""
    path = moto_server_path(honour_override)
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def free_port():
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's S3 server on a free loopback port; ``start()`` runs it, ``stop()`` ends it.

    The port and endpoint are known before the start, so a caller can build
    the server's environment from them. Without ``log_path`` the server's
    output is discarded.
    """

    def __init__(self, command, log_path=None):
        self.command = command
        self.log_path = log_path
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.process = None

    def start(self, env=None, timeout=30, probe_timeout=1, interval=0.1):
        """Start the server with environment ``env`` (os.environ by default) and wait until it answers.

        Returns the seconds it took; raises MotoServerError (the server
        stopped) when it exits or does not answer within ``timeout`` seconds.
        """
        started = time.monotonic()
        args = [self.command, "-H", "127.0.0.1", "-p", str(self.port)]
        if self.log_path:
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    args, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
        else:
            self.process = subprocess.Popen(  # noqa: S603 - argument list, no shell
                args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
        see_log = "; see %s" % self.log_path if self.log_path else ""
        while True:
            if self.process.poll() is not None:
                raise MotoServerError("moto's S3 server exited (code %s)%s" % (self.process.returncode, see_log))
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=probe_timeout) as response:  # noqa: S310
                    response.read(1)
                return round(time.monotonic() - started, 2)
            except OSError:
                if time.monotonic() - started > timeout:
                    self.stop()
                    raise MotoServerError(
                        "moto's S3 server did not answer on %s within %d s%s" % (self.endpoint, timeout, see_log)
                    ) from None
                time.sleep(interval)

    def client(self):
        """A boto3 S3 client of this server with the test credentials."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def stop(self, timeout=10):
        """Terminate the server (killed after ``timeout`` seconds); nothing happens when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
