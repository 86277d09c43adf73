"""Install the console's third-party assets from the npm registry (run by `make vendor`,
which every set-up target depends on; standard library only, so it runs before .venv/).

    python3 deploy/vendor.py [--force] [--manifest FILE] [--dest DIR] [--registry URL]

The manifest (pipeline/console/static/vendor/vendor.json) pins each package: its version,
the npm `dist.integrity` of its tarball (SRI, sha512), the files taken from it and the
sha256 of each. A file already installed with its pinned sha256 is left alone (no network);
otherwise the tarball is downloaded from the registry (`--registry`, else
$npm_config_registry, else https://registry.npmjs.org), checked against the pinned
integrity, and the files are taken out of it, checked, and written in place. Any failure is
one line on standard error, `vendor: ...`, and exit status 1; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "pipeline" / "console" / "static" / "vendor" / "vendor.json"
REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL = 64 * 1024 * 1024  # bytes: far above any asset package, below a runaway answer
ATTEMPTS = 3  # a timeout, a reset or a 5xx is tried again, after 1 s then 2 s
TIMEOUT_S = 60


class Failure(Exception):
    """What went wrong, as the one line the set-up prints."""


def files_of(name: str, record: dict[str, str]) -> list[tuple[str, str, str]]:
    """(path in the tarball, installed name, pinned sha256) of each file `record` takes."""
    try:
        return [
            ("package/" + record["taken_from"], record["file"], record["sha256"]),
            ("package/" + record["licence_taken_from"], record["licence_file"],
             record["licence_sha256"]),
        ]  # fmt: skip
    except KeyError as missing:
        raise Failure(f"{name} in the manifest has no {missing}") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(dest: Path, files: list[tuple[str, str, str]]) -> bool:
    """Whether every file is in `dest` with its pinned checksum."""
    for _, file, digest in files:
        try:
            if sha256((dest / file).read_bytes()) != digest:
                return False
        except FileNotFoundError:
            return False
    return True


def tarball_url(registry: str, name: str, version: str) -> str:
    """Where the registry keeps `name`@`version` (npm's layout; a scope keeps its prefix)."""
    return f"{registry.rstrip('/')}/{name}/-/{name.split('/')[-1]}-{version}.tgz"


def download(url: str, what: str) -> bytes:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
                data = answer.read(MAX_TARBALL + 1)
            if len(data) > MAX_TARBALL:
                raise Failure(f"{what} from {url} is over {MAX_TARBALL} bytes")
            return bytes(data)
        except urllib.error.HTTPError as error:
            reason = f"HTTP {error.code} {error.reason}"
            if error.code < 500:
                break
        except (urllib.error.URLError, OSError) as error:
            reason = str(getattr(error, "reason", error))
        if attempt < ATTEMPTS:
            time.sleep(attempt)
    raise Failure(
        f"could not download {what} from {url}: {reason} (the console's assets come from the "
        "npm registry at set-up; set npm_config_registry for a mirror)"
    )


def check_integrity(data: bytes, integrity: str, what: str, url: str) -> None:
    """`data` against an SRI string ("sha512-<base64>", several allowed: any may match)."""
    wanted = [tuple(part.split("-", 1)) for part in integrity.split() if "-" in part]
    if not wanted or any(algo not in ("sha256", "sha384", "sha512") for algo, _ in wanted):
        raise Failure(f"{what}: the manifest's npm_integrity {integrity!r} is not sha256/384/512")
    for algo, expected in wanted:
        got = base64.b64encode(hashlib.new(algo, data).digest()).decode()
        if hmac.compare_digest(got, expected):
            return
    raise Failure(
        f"{what} from {url} does not match its pinned integrity {integrity} (got {algo}-{got}): "
        "not installed"
    )


def take(data: bytes, files: list[tuple[str, str, str]], what: str) -> dict[str, bytes]:
    """Each file's bytes out of the (checked) tarball, each checked against its sha256."""
    taken = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member, file, digest in files:
                try:
                    entry = archive.getmember(member)
                except KeyError:
                    raise Failure(f"{what} has no {member}") from None
                reader = archive.extractfile(entry) if entry.isfile() else None
                if reader is None:
                    raise Failure(f"{what}: {member} is not a file")
                body = reader.read()
                if sha256(body) != digest:
                    raise Failure(
                        f"{what}: {member} has sha256 {sha256(body)}, the manifest pins {digest}"
                    )
                taken[file] = body
    except (tarfile.TarError, EOFError, OSError) as error:
        raise Failure(f"{what} is not a readable .tgz: {error}") from None
    return taken


def write(dest: Path, taken: dict[str, bytes]) -> None:
    """Each file into `dest`, whole or not at all (a temporary file, then a rename)."""
    for file, body in taken.items():
        handle, temporary = tempfile.mkstemp(dir=dest, prefix=f".{file}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(body)
            os.chmod(temporary, 0o644)
            os.replace(temporary, dest / file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def vendor(manifest: Path, dest: Path, registry: str, force: bool) -> list[str]:
    """Install every package of `manifest` into `dest`; a line saying what was done, each."""
    try:
        packages = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise Failure(f"cannot read the manifest {manifest}: {error}") from None
    done = []
    for name, record in packages.items():
        version = record.get("version", "")
        what = f"{name} {version}"
        files = files_of(name, record)
        if not force and installed(dest, files):
            done.append(f"{what}: installed, checksums match the manifest")
            continue
        url = tarball_url(registry, name, version)
        data = download(url, what)
        check_integrity(data, record.get("npm_integrity", ""), what, url)
        write(dest, take(data, files, what))
        names = ", ".join(file for _, file, _ in files)
        done.append(f"{what}: {names} installed from {url} (integrity checked)")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--dest", type=Path, help="default: the manifest's folder")
    parser.add_argument("--registry", help=f"default: $npm_config_registry, else {REGISTRY}")
    parser.add_argument("--force", action="store_true", help="download even if installed")
    args = parser.parse_args(argv)
    registry = (
        args.registry
        or os.environ.get("npm_config_registry")  # noqa: SIM112 (npm reads either)
        or os.environ.get("NPM_CONFIG_REGISTRY")
        or REGISTRY
    )
    try:
        for line in vendor(args.manifest, args.dest or args.manifest.parent, registry, args.force):
            print(f"vendor: {line}")
    except Failure as failure:
        print(f"vendor: {failure}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. the destination cannot be written
        print(f"vendor: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
