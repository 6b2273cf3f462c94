"""Every command in README.md and docs/*.md runs as written: its flags parse with the parser that will read them,
the files it names exist, and every link and picture resolves. A command is a line of a code block (fenced or
indented) or an inline `code` span that starts with `dgen `, `python -m dgen`, `python dgen/train.py`,
`accelerate launch ... dgen/train.py`, `make ` or `sbatch `. Placeholders stand for values of their type
(S a seed, N a count, M a model); `...` means "more flags" and is dropped.

    pytest -q tests/test_docs.py
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = {"S": "0", "N": "2", "M": "vae", "K": "16", "PX": "32", "I/N": "0/1", "B": "64", "E": "1", "W": "16", "C": "0.1"}
PREFIXES = ("dgen ", "python -m dgen", "python dgen/train.py", "accelerate launch", "make ", "sbatch ")


def _code_lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, command, its block's text) for each command line of a page, continuation lines joined."""
    out, fenced, block, start = [], False, [], 0
    lines = text.splitlines()
    blocks: list[tuple[int, list[str]]] = []
    for i, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if fenced:
                blocks.append((start, block))
            fenced, block, start = not fenced, [], i + 1
        elif fenced:
            block.append(line)
        elif line.startswith("    ") and (i == 1 or not lines[i - 2].strip() or lines[i - 2].startswith("    ")):
            if not blocks or blocks[-1][0] + len(blocks[-1][1]) != i:
                blocks.append((i, []))
            blocks[-1][1].append(line)
    for first, body in blocks:
        joined, n = "", first
        for k, line in enumerate(body):
            joined = joined + " " + line.strip() if joined else line.strip()
            if joined.endswith("\\"):
                joined = joined[:-1]
                continue
            out.append((n, joined, "\n".join(body)))
            joined, n = "", first + k + 1
    for i, line in enumerate(lines, 1):  # inline spans with a flag's value or a make target (`dgen eval --run`
        # names a flag, `dgen eval` a command)
        for span in re.findall(r"`([^`]+)`", line):
            if (" -" in span or span.startswith("make ")) and not span.split()[-1].startswith("--"):
                out.append((i, span, ""))
    return out


def _loop_values(block: str) -> dict[str, str]:
    """`for s in 0 1 2` in the block: $s stands for its first value."""
    return {m.group(1): m.group(2) for m in re.finditer(r"for (\w+) in (\S+)", block)}


def _commands(line: str, block: str) -> list[list[str]]:
    """The commands of one shell line that the docs promise: loops, env assignments and comments removed."""
    for var, value in _loop_values(block).items():
        line = re.sub(rf"\$\{{?{var}\}}?", value, line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    out, cmd, assigned = [], [], {}
    for w in words + [";"]:
        if w in (";", "&&", "||", "|") or w.endswith(";"):
            if w.endswith(";") and len(w) > 1:
                cmd.append(w[:-1])
            if cmd:
                out.append((assigned, cmd))
            cmd, assigned = [], {}
        elif not cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", w):
            name, _, value = w.partition("=")  # VAR=value before a command: its environment
            assigned = {**assigned, name: value}
        elif not cmd and w in ("do", "then", "done", "fi"):
            continue  # loop keywords
        else:
            cmd.append(w)
    ours = []
    for assigned, cmd in out:
        cmd = [w for w in cmd if w not in ("...", "…")]  # "more flags"
        text = " ".join(cmd)
        if text.startswith(PREFIXES) and not text.startswith("for "):
            ours.append([*(f"{k}={v}" for k, v in assigned.items() if k == "DGEN_METHODS"),
                         *(PLACEHOLDER.get(w, w) for w in cmd)])
    return ours


def _train_args(args: list[str]) -> None:
    from dgen.options import parse_args

    try:
        parse_args(args)
    except SystemExit as e:
        if e.code:
            raise AssertionError(f"dgen train flags do not parse: {args}") from None


@cache
def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


@cache
def _module_help(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, f"python -m {module} --help: {done.stderr[-2000:]}"
    return done.stdout


def check(cmd: list[str]) -> None:
    """Raise AssertionError when `cmd` would be refused by what parses it, or names a file that does not exist.
    A leading DGEN_METHODS=MODULE is the environment of the command: its methods are registered first."""
    if cmd[0].startswith("DGEN_METHODS="):
        import importlib

        import dgen.methods

        saved = dict(dgen.methods._REGISTERED)
        module = cmd[0].partition("=")[2]
        try:  # its methods registered for this check only: other tests in this process see the built-in ones
            importlib.reload(sys.modules[module]) if module in sys.modules else importlib.import_module(module)
            return check(cmd[1:])
        finally:
            dgen.methods._REGISTERED.clear()
            dgen.methods._REGISTERED.update(saved)
    head = cmd[0]
    if head == "make":
        assert cmd[1] in _make_targets(), f"no make target {cmd[1]!r}"
    elif head == "dgen" and cmd[1:2] == ["train"] or cmd[:2] == ["python", "dgen/train.py"]:
        _train_args(cmd[2:])
    elif head == "dgen":
        from dgen.cli import build_parser

        if "--help" in cmd or "-h" in cmd:
            return
        try:
            build_parser().parse_args(cmd[1:])
        except SystemExit as e:
            raise AssertionError(f"dgen flags do not parse: {cmd}") from e
    elif head == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        try:
            args = launch_command_parser().parse_args(cmd[2:])
        except SystemExit as e:
            raise AssertionError(f"accelerate launch flags do not parse: {cmd}") from e
        if args.config_file:
            assert (ROOT / args.config_file).is_file(), f"no {args.config_file}"
        assert args.training_script == "dgen/train.py", cmd
        _train_args(args.training_script_args)
    elif head == "python" and cmd[1] == "-m":
        help_text = _module_help(cmd[2])
        for flag in (w.split("=")[0] for w in cmd[3:] if w.startswith("--")):
            assert flag in help_text, f"python -m {cmd[2]} has no {flag}"
    elif head == "sbatch":
        script = next(w for w in cmd[1:] if w.endswith(".sbatch"))
        assert (ROOT / script).is_file(), f"no {script}"
        rest = cmd[cmd.index(script) + 1:]
        if script == "slurm/train.sbatch":
            _train_args(rest)
        elif script == "slurm/shard.sbatch":
            check(["dgen", "shard", *rest])


def _page_commands():
    for page in PAGES:
        for n, line, block in _code_lines(page.read_text()):
            for cmd in _commands(line, block):
                yield pytest.param(cmd, id=f"{page.relative_to(ROOT)}:{n}:{' '.join(cmd)[:60]}")


@pytest.mark.parametrize("cmd", list(_page_commands()))
def test_command_runs_as_written(cmd):
    check(cmd)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_pictures_and_named_files_exist(page):
    text = page.read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # links live in the prose, not in code
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose):
        if not re.match(r"[a-z]+://", target):
            assert (page.parent / target).exists(), f"{page.name}: link to missing {target}"
    for name in re.findall(r"(?<![\w./-])((?:launch|slurm|dgen|tests|docs)/[\w./-]+\.(?:yaml|json|sbatch|py|md|png))",
                           text):
        assert (ROOT / name).exists(), f"{page.name} names {name}, which does not exist"


def test_readme_is_a_first_page():
    """Read in five minutes: at most ~15 KB, a picture near the top, the two set-up commands, a docs index."""
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 16_000, f"README.md is {len(text.encode()):,} bytes"
    assert "![" in text[:3000] and "make train" in text and "make test" in text
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text, f"README's docs index does not link docs/{page.name}"


def test_the_checker_refuses_what_a_real_run_would():
    """The checks can fail: a mistyped flag, a missing config file, a missing make target."""
    for bad in (["dgen", "train", "--model", "vae", "--max-step", "3"],
                ["accelerate", "launch", "--config_file", "launch/none.yaml", "dgen/train.py"],
                ["make", "no-such-target"], ["dgen", "eval", "--sample", "3"],
                ["sbatch", "slurm/train.sbatch", "--model", "nope"]):
        with pytest.raises(Exception):  # AssertionError, or the parser's own ConfigError
            check(bad)
