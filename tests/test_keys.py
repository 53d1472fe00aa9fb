"""Key import for the container: armored private keys from a Secret mount into an ephemeral
GNUPGHOME, then ``pass show`` from a read-only store — with real gpg and pass."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from slingshot_runtime import devstack
from slingshot_runtime.errors import SecretError
from slingshot_runtime.secrets import MAX_GNUPGHOME_LEN, discard_gnupghome, import_keys, pass_show, prepare_secrets

VALUE = "v4lue-that-must-not-leak"


def mount_like_kubernetes(directory: Path, files: dict[str, bytes]) -> Path:
    """The layout of a mounted Secret: files are symlinks into ``..data``, itself a symlink
    to a timestamped directory; all hidden entries."""
    stamp = directory / "..2024_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for name, data in files.items():
        (stamp / name).write_bytes(data)
        (stamp / name).chmod(0o644)
    (directory / "..data").symlink_to(stamp.name)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devstack.PassStore]:
    passwords = devstack.make_pass_store(tmp_path_factory.mktemp("keys"), {"s3/secret-key": VALUE, "db": "pw"})
    yield passwords
    passwords.close()


@pytest.fixture(scope="module")
def private_key(store: devstack.PassStore, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("export") / "key.asc"
    store.export_private_key(path)
    return path.read_bytes()


@pytest.fixture
def homes() -> Iterator[list[str]]:
    """GNUPGHOMEs made by a test; each one's agent is stopped and the home removed."""
    made: list[str] = []
    yield made
    for home in made:
        discard_gnupghome(home)


def _gpg(home: str, *args: str) -> str:
    return subprocess.run(
        ["gpg", "--homedir", home, "--batch", *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout


def _pass_env(pass_vars: dict[str, str]) -> dict[str, str]:
    return dict(os.environ, **pass_vars)


def test_keys_from_a_secret_mount_decrypt_the_store(
    store: devstack.PassStore, private_key: bytes, tmp_path: Path, homes: list[str]
) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"service.asc": private_key})
    pass_vars = prepare_secrets({"SLINGSHOT_GPG_KEYS_DIR": str(keys), "PASSWORD_STORE_DIR": str(store.store_dir)})
    home = pass_vars["GNUPGHOME"]
    homes.append(home)
    assert pass_vars["PASSWORD_STORE_DIR"] == str(store.store_dir)
    assert home.startswith("/tmp/") and len(home) <= MAX_GNUPGHOME_LEN
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert home != str(store.gnupghome)
    assert pass_show("s3/secret-key", _pass_env(pass_vars)) == VALUE
    assert pass_show("db", _pass_env(pass_vars)) == "pw"
    # Trusted ultimately (6): without it `pass insert` refuses with "There is no assurance…".
    assert f"{store.key_id}:6:" in _gpg(home, "--export-ownertrust")


def test_discard_removes_the_home(private_key: bytes, tmp_path: Path) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    home = import_keys(str(keys))
    assert (Path(home) / "pubring.kbx").exists()
    discard_gnupghome(home)
    assert not Path(home).exists()


def test_a_given_home_is_made_private(private_key: bytes, tmp_path: Path, homes: list[str]) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    wanted = Path("/tmp") / f"sl-home-{os.getpid()}-{tmp_path.name[-8:]}"
    wanted.mkdir(mode=0o755)
    homes.append(str(wanted))
    assert import_keys(str(keys), str(wanted)) == str(wanted)
    assert stat.S_IMODE(wanted.stat().st_mode) == 0o700


def test_missing_key_directory(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match=r"gpg key directory '.*/absent' does not exist .*SLINGSHOT_GPG_KEYS_DIR"):
        import_keys(str(tmp_path / "absent"))


def test_directory_with_only_hidden_entries_has_no_key(tmp_path: Path) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {})
    (keys / ".hidden.asc").write_text("x")
    with pytest.raises(SecretError, match="no key in gpg key directory"):
        import_keys(str(keys))


def test_public_key_is_refused(store: devstack.PassStore, tmp_path: Path) -> None:
    public = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", "--", store.key_id],
        env=dict(os.environ, GNUPGHOME=str(store.gnupghome)), capture_output=True, check=True, timeout=30,
    ).stdout
    keys = mount_like_kubernetes(tmp_path / "gpg", {"public.asc": public})
    with pytest.raises(SecretError, match=r"public\.asc' is a public key only: export the private key"):
        import_keys(str(keys))


def test_garbage_is_refused(tmp_path: Path) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"notes.txt": b"hello"})
    with pytest.raises(SecretError, match=r"notes\.txt' is not an armored OpenPGP key"):
        import_keys(str(keys))


def test_corrupt_private_block_is_refused(tmp_path: Path) -> None:
    block = b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PRIVATE KEY BLOCK-----\n"
    keys = mount_like_kubernetes(tmp_path / "gpg", {"broken.asc": block})
    with pytest.raises(SecretError, match=r"broken\.asc' could not be imported"):
        import_keys(str(keys))


def test_passphrase_protected_key_is_refused(tmp_path: Path) -> None:
    home = Path("/tmp") / f"sl-prot-{os.getpid()}"
    home.mkdir(mode=0o700)
    try:
        env = dict(os.environ, GNUPGHOME=str(home))
        generate = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "hunter2"]
        subprocess.run([*generate, "--quick-gen-key", "protected <p@slingshot.invalid>", "future-default", "default", "never"],
                       env=env, capture_output=True, check=True, timeout=60)
        exported = subprocess.run([*generate, "--armor", "--export-secret-keys", "p@slingshot.invalid"],
                                  env=env, capture_output=True, check=True, timeout=60).stdout
    finally:
        discard_gnupghome(str(home))
    keys = mount_like_kubernetes(tmp_path / "gpg", {"protected.asc": exported})
    with pytest.raises(SecretError, match=r"\(protected <p@slingshot\.invalid>\) is protected by a passphrase"):
        import_keys(str(keys))


def test_entry_encrypted_for_another_key(private_key: bytes, tmp_path: Path, homes: list[str]) -> None:
    other = devstack.make_pass_store(tmp_path / "other", {"s3/secret-key": "other"})
    try:
        keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
        pass_vars = prepare_secrets({"SLINGSHOT_GPG_KEYS_DIR": str(keys), "PASSWORD_STORE_DIR": str(other.store_dir)})
        homes.append(pass_vars["GNUPGHOME"])
        with pytest.raises(SecretError, match=r"'s3/secret-key'.*no secret key for this entry \(encrypted for another key"):
            pass_show("s3/secret-key", _pass_env(pass_vars))
    finally:
        other.close()


def test_missing_entry(store: devstack.PassStore, private_key: bytes, tmp_path: Path, homes: list[str]) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    pass_vars = prepare_secrets({"SLINGSHOT_GPG_KEYS_DIR": str(keys), "PASSWORD_STORE_DIR": str(store.store_dir)})
    homes.append(pass_vars["GNUPGHOME"])
    with pytest.raises(SecretError, match=r"'postgres/password'.*no such entry"):
        pass_show("postgres/password", _pass_env(pass_vars))


def test_missing_store(private_key: bytes, tmp_path: Path) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    with pytest.raises(SecretError, match=r"password store '.*/nowhere' does not exist"):
        prepare_secrets({"SLINGSHOT_GPG_KEYS_DIR": str(keys), "PASSWORD_STORE_DIR": str(tmp_path / "nowhere")})


@pytest.mark.parametrize("command", ["gpg", "pass"])
def test_missing_commands(command: str, store: devstack.PassStore, private_key: bytes, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gpg", "pass", "gpgconf", "gpg-connect-agent"):
        if tool != command:
            found = shutil.which(tool)
            assert found is not None, f"{tool} is not installed"
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(SecretError, match=f"the '{command}' command is not installed"):
        prepare_secrets({"SLINGSHOT_GPG_KEYS_DIR": str(keys), "PASSWORD_STORE_DIR": str(store.store_dir)})


def test_home_path_too_long_for_agent_sockets(private_key: bytes, tmp_path: Path) -> None:
    keys = mount_like_kubernetes(tmp_path / "gpg", {"k.asc": private_key})
    deep = Path("/tmp") / ("d" * 90)
    with pytest.raises(SecretError, match=f"characters long; gpg-agent's sockets need at most {MAX_GNUPGHOME_LEN}"):
        import_keys(str(keys), str(deep))
    assert not deep.exists()
