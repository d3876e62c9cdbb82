"""Bad input through the real ``ragpipe`` command: one line on stderr, exit 2 or 1, no traceback, index untouched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY_DOCS, write_jsonl

_SCRIPT = Path(sys.executable).parent / "ragpipe"
RAGPIPE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "pipeline.serving.cli"]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RAGPIPE_"))}
    return {**env, "RAGPIPE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "RAGPIPE_CACHE_DIR": str(cache), **extra}


def _ragpipe(args: list[Any], env: dict[str, str]) -> tuple[int, str, str]:
    """Run ``ragpipe --quiet ARGS``; (exit code, stdout, stderr), both decoded as strict UTF-8."""
    proc = subprocess.run([*RAGPIPE, "--quiet", *args], env=env, capture_output=True, timeout=120)
    return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of the index, temp folders of writers in progress left out."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".tmp-" not in p.relative_to(folder).as_posix()}


def _config(root: Path) -> Path:
    """A BM25-only (whitespace tokenizer) config over the tiny corpus, its index at ``root/idx/index``."""
    cfg = {
        "name": "bad-input",
        "index_dir": str(root / "idx" / "index"),
        "data": {"loader": "jsonl", "path": str(write_jsonl(root / "corpus.jsonl", TINY_DOCS)), "id_field": "doc_id", "title_field": "title"},
        "chunking": {"splitter": "none"},
        "retrieval": {"top_k": 3, "retrievers": [{"type": "bm25", "name": "bm25", "tokenizer": {"name": "whitespace"}, "candidate_k": 5}]},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(config, index folder, env) with the index built once, plus the bad data files beside the config."""
    root = tmp_path_factory.mktemp("bad-input")
    cfg, env = _config(root), _env(root / "cache")
    ok = json.dumps(TINY_DOCS[0], ensure_ascii=False)
    bad_files = {
        "list.jsonl": "[1, 2]\n[3]\n",
        "str.jsonl": f'{ok}\n"just text"\n',
        "num.jsonl": f'{ok}\n{{"doc_id": "b", "text": 5}}\n',
        "notext.jsonl": f'{ok}\n{{"doc_id": "b", "body": "x"}}\n',
        "surrogate.jsonl": '{"doc_id": "a", "text": "bad \\ud800 text"}\n',
        "items.json": json.dumps([TINY_DOCS[0], 5]),
    }
    for name, text in bad_files.items():
        (root / name).write_text(text, encoding="utf-8")
    code, _, err = _ragpipe(["ingest", "-c", cfg], env)
    assert code == 0, err
    return cfg, root / "idx" / "index", env


CASES = [  # (args after -c CFG; {dir} is the config's folder), exit code, substrings the one stderr line must hold
    pytest.param(["query", "서울", "--set", "retrieval.retrievers[x].weight=1"], 2,
                 ["--set retrieval.retrievers[x].weight=1", "'x' is not a number"], id="set-index-not-a-number"),
    pytest.param(["ingest", "--set", "retrieval.retrievers[1.weight=1"], 2,
                 ["--set retrieval.retrievers[1.weight=1", "unclosed '['"], id="set-unclosed-bracket"),
    pytest.param(["query", "서울", "--set", "retrieval.top_k=[1,"], 2,
                 ["--set retrieval.top_k=[1,", "not valid YAML"], id="set-malformed-yaml"),
    pytest.param(["ingest", "--set", "data.path={dir}/list.jsonl"], 1,
                 ["list.jsonl: line 1", "expected a JSON object, got list"], id="jsonl-line-is-a-list"),
    pytest.param(["ingest", "--set", "data.path={dir}/str.jsonl"], 1,
                 ["str.jsonl: line 2", "expected a JSON object, got str"], id="jsonl-line-is-a-string"),
    pytest.param(["ingest", "--set", "data.loader=json", "--set", "data.path={dir}/items.json"], 1,
                 ["items.json: [1]", "got int"], id="json-item-not-an-object"),
    pytest.param(["ingest", "--set", "data.path={dir}/num.jsonl"], 1,
                 ["num.jsonl: line 2", "'text' is int"], id="text-not-a-string"),
    pytest.param(["ingest", "--set", "data.path={dir}/notext.jsonl"], 1,
                 ["notext.jsonl: line 2", "missing text field 'text'"], id="text-missing"),
    pytest.param(["ingest", "--set", "data.path={dir}/surrogate.jsonl"], 1,
                 ["surrogate.jsonl: line 1", "'text'", "lone surrogate '\\ud800'"], id="text-lone-surrogate"),
    pytest.param(["query", "서울", "--set", "retrieval.retrievers[0].tokenizer.name=mecab"], 2,
                 ["retrieval.retrievers[bm25].tokenizer.name = 'mecab' is not a tokenizer", "kiwi, whitespace, regex, hf:"], id="unknown-tokenizer"),
    pytest.param(["query", "서울", "--set", "retrieval.retrievers[0].weight=abc"], 2,
                 ["cfg.yaml: retrieval.retrievers[0].weight = 'abc'", "valid number"], id="weight-not-a-number"),
]


@pytest.mark.parametrize("args, code, named", CASES)
def test_bad_input_one_line(built: tuple[Path, Path, dict[str, str]], args: list[str], code: int, named: list[str]) -> None:
    cfg, index, env = built
    before = _files(index)
    command, *rest = [a.format(dir=cfg.parent) for a in args]
    got, _, err = _ragpipe([command, "-c", cfg, *rest], env)
    assert got == code, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("ragpipe: error: "), err
    for part in named:
        assert part in err, err
    assert _files(index) == before


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_query_with_undecodable_bytes(built: tuple[Path, Path, dict[str, str]], as_json: bool) -> None:
    """Lone surrogates from argv (bytes that were not UTF-8): one error line naming the argument, exit 1."""
    cfg, _, env = built
    question = b"\xed\xa0\x80\xff \xec\x84\x9c\xec\x9a\xb8"  # an encoded surrogate, a stray byte, then " 서울"
    strict = {**env, "PYTHONIOENCODING": "utf-8"}  # stdout refuses surrogates, as under an en_US.UTF-8 locale
    code, out, err = _ragpipe(["query", "-c", cfg, question, *(["--json"] if as_json else [])], strict)
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith("ragpipe: error: QUESTION: 4 byte(s) are not UTF-8"), err
    assert "Traceback" not in err and out == ""


# The child is the real CLI with the manifest write (the last file of an index) held open: a real ingest of
# a small corpus keeps its temp folder for ~50 ms, too short to hit reliably on a shared machine.
_HELD_WRITE = """\
import sys, time
import pipeline.storage.index_dir as index_dir
index_dir.write_manifest = lambda *a, **k: time.sleep(300)
from pipeline.serving.cli import run
sys.argv = ["ragpipe", *sys.argv[1:]]
run()
"""


def test_killed_ingest_leaves_index_and_no_temp_folder(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path), _env(tmp_path / "cache")
    index = tmp_path / "idx" / "index"
    assert _ragpipe(["ingest", "-c", cfg], env)[0] == 0
    before = _files(index)
    changed = write_jsonl(tmp_path / "changed.jsonl", TINY_DOCS[:3])
    child = subprocess.Popen([sys.executable, "-c", _HELD_WRITE, "--quiet", "ingest", "-c", str(cfg), "--set", f"data.path={changed}"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    temp: list[Path] = []
    deadline = time.monotonic() + 60
    while not temp and child.poll() is None and time.monotonic() < deadline:
        temp = [p for p in index.glob(f".v*.tmp-{child.pid}-*") if (p / "documents.jsonl").exists()]
        time.sleep(0.01)
    try:
        assert temp, f"no temp folder seen; ingest exited {child.returncode}: {child.stderr.read().decode() if child.stderr else ''}"
    finally:
        child.kill()
        child.wait()
        assert child.stderr is not None
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL and temp[0].is_dir()  # killed mid-write, its temp folder left behind
    assert _files(index) == before  # the live index is exactly as it was

    code, _, err = _ragpipe(["ingest", "-c", cfg], env)
    assert code == 0, err
    assert len(err.splitlines()) == 1 and "removed 1 folder(s)" in err and temp[0].name in err, err
    assert sorted(p.name for p in index.parent.iterdir()) == ["index"] and not [p for p in index.iterdir() if ".tmp-" in p.name]
