"""Experiments and data on object storage: an S3-compatible server (moto) on 127.0.0.1 stands in
for S3.

The mirror keeps a local copy and the storage in step both ways (the newer side wins, nothing is
deleted); a search with ``--data s3://...`` and ``--experiment s3://...`` reads a local copy of
the data and leaves its results on the storage, readable with polars from there, and a machine
with no local copy rebuilds the report from the storage alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from astra.storage import Mirror, StorageError, is_remote

moto_server = pytest.importorskip("moto.server")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """``s3(path)``: the URI of ``path`` in a bucket of an S3 server on 127.0.0.1 (this test's own)."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    import pyarrow.fs

    filesystem, _ = pyarrow.fs.FileSystem.from_uri(f"s3://bucket?{query}&allow_bucket_creation=true")
    filesystem.create_dir("bucket")
    try:
        yield lambda path: f"s3://bucket/{path}?{query}"
    finally:
        server.stop()


def test_the_local_copy_and_the_storage_stay_in_step_both_ways(s3, tmp_path: Path) -> None:
    here = Mirror.of(s3("exp"), tmp_path / "here")
    (here.local / "trials" / "a").mkdir(parents=True)
    (here.local / "trials" / "a" / "result.json").write_text('{"score": 1}')
    (here.local / "search.json").write_text("{}")
    (here.local / ".search.json.x.tmp").write_text("half-written")  # an atomic write under way
    assert here.push() == 2 and here.push() == 0  # the second finds everything in step

    there = Mirror.of(s3("exp"), tmp_path / "there")
    assert there.pull() == 2 and there.pull() == 0
    assert (there.local / "trials" / "a" / "result.json").read_text() == '{"score": 1}'
    assert not (there.local / ".search.json.x.tmp").exists()

    time.sleep(1.1)  # the storage keeps times to the second
    (there.local / "trials" / "a" / "result.json").write_text('{"score": 2}')  # the same size
    assert there.push("trials/a") == 1
    assert here.push() == 0  # older here: not copied over the newer stored one
    assert here.pull() == 1 and (here.local / "trials" / "a" / "result.json").read_text() == '{"score": 2}'
    (here.local / "search.json").unlink()
    assert here.push() == 0 and there.pull() == 0  # nothing is deleted on either side


def test_storage_locations_are_told_apart_from_paths() -> None:
    assert is_remote("s3://bucket/exp") and is_remote("gs://bucket/exp")
    assert not is_remote("runs/search/smoke") and not is_remote("/nfs/searches") and not is_remote(None)
    with pytest.raises(StorageError, match=r"ftp://host/x: storage of kind 'ftp' is not supported"):
        is_remote("ftp://host/x")


def test_a_search_on_s3_leaves_its_results_there_and_reports_from_the_storage_alone(
    s3,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_tiny_dataset: Callable[..., Any],
    tiny_overrides: list[str],
    tiny_space: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    local_ray: None,
) -> None:
    from astra.search.run import SearchError, SearchOptions, run_search

    monkeypatch.setenv("ASTRA_CACHE", str(tmp_path / "cache"))
    data = make_tiny_dataset(tmp_path / "data").root
    space = tiny_space(tmp_path / "tiny.yaml", [*tiny_overrides, "train.epochs=1"], trials=1)
    stored_data = s3("datasets/tiny")
    assert Mirror.of(stored_data, data).push() > 0  # the dataset on the storage too
    uri = s3("searches/tiny")
    assert run_search(SearchOptions(space=str(space), data=stored_data, experiment=uri, seed=3)) == 0
    assert f"experiment on storage {uri}" in capsys.readouterr().out
    local_data = Mirror.of(stored_data, kind="data").local  # copied once to this machine, read there
    assert (local_data / "splits.json").read_text() == (data / "splits.json").read_text()

    host_port = uri.split("endpoint_override=")[1].split("&")[0]
    options = {
        "aws_endpoint_url": f"http://{host_port}", "aws_allow_http": "true", "aws_region": "us-east-1",
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
    }  # fmt: skip
    table = pl.read_parquet("s3://bucket/searches/tiny/results.parquet", storage_options=options)
    assert table.height == 1 and table["status"].to_list() == ["finished"]
    trial = table["trial_id"][0]
    stored = Mirror.of(uri, tmp_path / "check")
    stored.pull(f"trials/{trial}")
    assert (stored.local / "trials" / trial / "result.json").is_file()
    assert (stored.local / "trials" / trial / "run" / "checkpoints" / "best.pt").is_file()

    with pytest.raises(SearchError, match=r"s3://bucket/searches/elsewhere\?.*: no search experiment there"):
        run_search(SearchOptions(experiment=s3("searches/elsewhere"), report=True))
    # A new machine: another cache folder, nothing local. The report is rebuilt from what the
    # storage holds, and the search resumes there (its one trial is done: nothing trains).
    monkeypatch.setenv("ASTRA_CACHE", str(tmp_path / "elsewhere"))
    assert run_search(SearchOptions(experiment=uri, report=True)) == 0
    assert "1 trials ->" in capsys.readouterr().out
    assert (Mirror.of(uri).local / "summary.md").is_file()
    assert Mirror.of(uri).local.is_relative_to(tmp_path / "elsewhere")
    assert run_search(SearchOptions(space=str(space), data=stored_data, experiment=uri, seed=3)) == 0
    assert pl.read_parquet(Mirror.of(uri).local / "results.parquet")["status"].to_list() == ["finished"]
