"""The README's Azure walkthrough, run as written against ``ccexport serve``.

The commands between ``<!-- walkthrough -->`` and ``<!-- /walkthrough -->`` in
README.md are read and carried out in order, with their own bodies: ``curl`` against
serve (``$APP_URL``; ``$FUNC_KEY`` and ``$TOKEN`` are sent and ignored on loopback), a
``text`` block's address opened as a browser would (following redirects through the
sandbox's consent page), ``VAR=$(curl … | jq -r PATH)`` assignments, ``python -m
bench.sample`` and
``az storage blob upload-batch`` into Azurite. A command this test cannot carry out
fails it, so the README cannot drift from what is tested. At the end the list must
hold exactly the sample's valid contacts.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.storage.blob import BlobServiceClient

from bench.sample import write_sample
from tests.support.function_harness import AppEnv
from tests.support.sandbox_service import RunningSandbox, cli_env
from tests.support.serve_service import RunningServe, running_serve
from tests.support.services import ROOT

README = ROOT / "README.md"
SECTION = re.compile(r"<!-- walkthrough -->(.*?)<!-- /walkthrough -->", re.S)
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)
ASSIGN = re.compile(r"^([A-Z_]+)=\$\((.*)\)$")
JQ = re.compile(r"^(.*?)\s*\|\s*jq (-r )?(\S+)$")
TERMINAL = {"Completed", "Failed", "Terminated"}
WATCH_TIMEOUT = 120.0


@dataclass(frozen=True)
class Step:
    kind: str  # "sh" or "browser"
    text: str


def walkthrough(readme: str) -> list[Step]:
    """The walkthrough's commands, in order."""
    found = SECTION.findall(readme)
    assert len(found) == 1, "README.md must hold exactly one walkthrough section"
    steps: list[Step] = []
    for lang, body in BLOCK.findall(found[0]):
        joined = re.sub(r"\\\n\s*", " ", body)
        for raw in joined.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if lang == "text":
                steps.append(Step("browser", line))
            elif lang in {"sh", "bash"}:
                steps.append(Step("sh", line))
            else:
                raise AssertionError(f"a walkthrough block of language {lang!r}")
    return steps


def jq(doc: Any, path: str) -> Any:
    """The part of ``doc`` at a jq path of names and indexes (``.runs[0].run_id``)."""
    if path == ".":
        return doc
    for name, index in re.findall(r"\.(\w+)|\[(\d+)\]", path):
        doc = doc[name] if name else doc[int(index)]
    return doc


@dataclass
class Walker:
    serve: RunningServe
    session: aiohttp.ClientSession
    app_env: AppEnv
    workdir: Path
    variables: dict[str, str] = field(default_factory=dict)
    answers: list[tuple[str, int, Any]] = field(default_factory=list)
    samples: list[list[str]] = field(default_factory=list)

    def expand(self, token: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            assert name in self.variables, f"the walkthrough uses ${name} before setting it"
            return self.variables[name]

        return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token)

    async def run(self, step: Step) -> None:
        if step.kind == "browser":
            await self.browse(self.expand(step.text))
            return
        assigned = ASSIGN.match(step.text)
        if assigned:
            name, inner = assigned.groups()
            piped = JQ.match(inner)
            assert piped, f"an assignment the test cannot carry out: {step.text}"
            answer = await self.curl(shlex.split(piped.group(1)))
            self.variables[name] = str(jq(answer, piped.group(3)))
            return
        piped = JQ.match(step.text)
        words = shlex.split(piped.group(1) if piped else step.text)
        if words[0] == "curl":
            answer = await self.curl(words)
            if piped:
                assert jq(answer, piped.group(3)) is not None
        elif words[:3] == [".venv/bin/python", "-m", "bench.sample"]:
            self.sample(words[3:])
        elif words[:4] == ["az", "storage", "blob", "upload-batch"]:
            self.upload(words[4:])
        else:
            raise AssertionError(f"a walkthrough command the test cannot carry out: {step.text}")

    async def browse(self, url: str) -> None:
        async with self.session.get(url, allow_redirects=True) as response:
            page = await response.text()
            assert response.status == 200, page
        assert "is now connected" in page

    async def curl(self, words: list[str]) -> Any:
        method, headers, data, url = None, {}, None, None
        args = iter(self.expand(w) for w in words[1:])
        for word in args:
            if word in {"-X", "--request"}:
                method = next(args)
            elif word in {"-H", "--header"}:
                name, _, value = next(args).partition(":")
                headers[name.strip()] = value.strip()
            elif word in {"-d", "--data", "--data-raw"}:
                data = next(args)
            elif word in {"--fail-with-body", "--fail", "-s", "-sS", "--silent"}:
                continue
            elif word.startswith("-"):
                raise AssertionError(f"a curl option the test does not know: {word}")
            else:
                url = word
        assert url is not None
        method = method or ("POST" if data is not None else "GET")
        if "/runs/" in url and method == "GET":
            return await self.watch(url)
        async with self.session.request(method, url, data=data, headers=headers) as response:
            raw = await response.read()
            answer = json.loads(raw) if raw else None
            assert response.status < 400, f"{method} {url}: {response.status} {answer}"
        self.answers.append((f"{method} {url.partition('?')[0]}", response.status, answer))
        return answer

    async def watch(self, url: str) -> Any:
        """A run's address, asked until the run has ended, as the README says to."""
        deadline = time.monotonic() + WATCH_TIMEOUT
        while True:
            async with self.session.get(url) as response:
                answer = await response.json()
                assert response.status == 200, answer
            if answer["runtime_status"] in TERMINAL or time.monotonic() > deadline:
                self.answers.append((f"GET {url.partition('?')[0]}", 200, answer))
                return answer
            await asyncio.sleep(0.5)

    def sample(self, args: list[str]) -> None:
        self.samples.append(args)
        done = subprocess.run(
            [sys.executable, "-m", "bench.sample", *args],
            cwd=self.workdir,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr

    def upload(self, args: list[str]) -> None:
        options: dict[str, str] = {}
        words = iter(args)
        for word in words:
            if word == "--auth-mode":
                assert next(words) == "login"  # no keys in the walkthrough
            elif word.startswith("--"):
                options[word] = self.expand(next(words))
        assert options.get("--destination") == "inbox"
        source = self.workdir / options["--source"]
        pattern = options.get("--pattern", "*")
        service = BlobServiceClient.from_connection_string(self.app_env.connection_string)
        inbox = service.get_container_client(self.app_env.inbox)
        for path in sorted(source.rglob("*")):
            name = path.relative_to(source).as_posix()
            if path.is_file() and fnmatch.fnmatchcase(name, pattern):  # az's matching: * spans /
                inbox.upload_blob(name, path.read_bytes(), overwrite=True)


def test_the_readme_holds_one_walkthrough_in_the_steps_users_take() -> None:
    steps = walkthrough(README.read_text("utf-8"))
    text = "\n".join(s.text for s in steps)
    order = [
        "connections/crm?",
        "connections/crm/connect",
        "connections/crm/lists",
        "upload-batch",
        "exports/high-value?",
        "exports/high-value/runs",
        "runs/$RUN_ID",
    ]
    positions = [text.find(marker) for marker in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)


@pytest.mark.azurite
async def test_the_readme_walkthrough_puts_the_segment_into_the_list(
    app_env: AppEnv, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    # The shared sandbox's imports end in well under a second: poll after 0.5 s, not 10.
    settings = app_env.settings(RUN_QUIET_SECONDS="0", RUN_POLL_SECONDS="0.5")
    env = cli_env(sandbox, tmp_path / "home", **settings)
    steps = walkthrough(README.read_text("utf-8"))
    workdir = tmp_path / "clone"
    workdir.mkdir()
    with running_serve(env, "--no-timer", log=tmp_path / "serve.log") as serve:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            walker = Walker(serve, session, app_env, workdir)
            walker.variables.update(
                APP_URL=serve.origin, FUNC_KEY="not-needed-on-loopback", TOKEN="signed-in-by-serve"
            )
            for step in steps:
                await walker.run(step)
        assert "Traceback" not in serve.log_text()

    run = walker.answers[-1][2]
    assert run["runtime_status"] == "Completed"
    report = run["report"]
    assert report["status"] == "completed"
    # The list named in the definition was created by the walkthrough; it holds exactly
    # the sample's valid contacts.
    created = next(
        a
        for k, s, a in walker.answers
        if k.endswith("/lists") and s in {200, 201} and k.startswith("POST")
    )
    (sample_args,) = walker.samples
    rows = int(sample_args[sample_args.index("--rows") + 1])
    counts = write_sample(tmp_path / "again", rows, bad_every=997, duplicate_every=1009)
    assert report["counts"]["contacts_delivered"] == counts.contacts
    assert report["list_ids"] == [created["list"]["list_id"]]
    assert len(sandbox.members(created["list"]["list_id"])) == counts.contacts
