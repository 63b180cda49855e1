import pytest

from erase.core.atomic import atomic_dir


def test_success_replaces_target_in_one_step(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
        assert not target.exists()  # nothing visible until the end
    assert (target / "a.txt").read_text() == "1"
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folders left behind


def test_failure_keeps_the_old_output(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(OSError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("new")
            raise OSError(28, "No space left on device")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuses_existing_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "out"):
            pass
