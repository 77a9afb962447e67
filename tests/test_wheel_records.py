"""dynamo.wheel_records: after a file pip installed changes (the image build strips shared libraries),
its RECORD row gets the new hash and size, as the standard library reads them back."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import subprocess
import sys
import zipfile

from dynamo.wheel_records import rehash

RECORD = "demo-1.0.dist-info/RECORD"


def installed(tmp_path):
    """A wheel with a shared-library-like file and a module, installed by pip into a folder of its own."""
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    files = {"demo/__init__.py": b"", "demo/_native.so": b"\x7fELF" + bytes(range(256)) * 8,
             "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
             "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(RECORD, "".join(f"{name},sha256={sha256(data)},{len(data)}\n" for name, data in files.items())
                         + f"{RECORD},,\n")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-compile",
                    "--target", str(site), str(wheel)], check=True)
    return site


def sha256(data):
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def misrecorded(site):
    """Files whose RECORD row differs from them, read as importlib.metadata (and SBOM tools) read RECORD."""
    dist = importlib.metadata.Distribution.at(site / "demo-1.0.dist-info")
    return [str(file) for file in dist.files if file.hash and (
        sha256(file.locate().read_bytes()) != file.hash.value or file.locate().stat().st_size != file.size)]


def test_a_changed_file_gets_its_new_hash_and_size(tmp_path):
    site = installed(tmp_path)
    assert misrecorded(site) == []
    (site / "demo" / "_native.so").write_bytes(b"\x7fELF stripped")
    assert misrecorded(site) == ["demo/_native.so"]
    assert rehash(site / RECORD) == 1
    assert misrecorded(site) == []
    assert "demo/_native.so,sha256=" in (site / RECORD).read_text()


def test_a_record_with_nothing_to_change_stays_byte_for_byte(tmp_path):
    site = installed(tmp_path)
    before = (site / RECORD).read_bytes()
    (site / "demo" / "__init__.py").unlink()  # a file that is gone keeps its row
    assert rehash(site / RECORD) == 0
    assert (site / RECORD).read_bytes() == before
