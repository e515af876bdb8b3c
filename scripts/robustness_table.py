"""Write docs/robustness.md: every bad input the tests feed the command line tools, and the line a user sees.

Runs the tests that check the bad-input contract (those importing ``tests/cli_errors.py``) with
``$LLM_EMBED_RECORD_ERRORS`` set, so each check records its command and error line, then tabulates
them by command. Temporary paths are shown as ``<tmp>``.

    python scripts/robustness_table.py            # minutes to tens of minutes on 2 cores

Or record them during a full test run, and tabulate that run's records:

    LLM_EMBED_RECORD_ERRORS=/tmp/errors.jsonl make test
    python scripts/robustness_table.py --records /tmp/errors.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "robustness.md"
TMP = re.compile(r"(/private)?/tmp/[^\s'\"`]*?/pytest-\d+/[^/\s'\"`]+")


def test_files() -> list[Path]:
    """The test modules that check the bad-input contract through ``cli_errors``."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if "from cli_errors" in p.read_text())


def record() -> list[dict]:
    """Run those tests with recording on; the records, or SystemExit when a test fails."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "errors.jsonl"
        env = {**os.environ, "LLM_EMBED_RECORD_ERRORS": str(log), "HF_HUB_OFFLINE": "1"}
        files = [str(p.relative_to(ROOT)) for p in test_files()]
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                              cwd=ROOT, env=env)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit("error: a bad-input test failed; fix it before writing the table")
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def clean(message: str) -> str:
    message = TMP.sub("<tmp>", message).replace(str(ROOT) + "/", "")
    return message.replace("|", "\\|")


def render(records: list[dict]) -> str:
    by_command: dict[str, dict[str, str]] = defaultdict(dict)
    for r in records:
        case = r["test"].split("::", 1)[-1]
        by_command[r["command"]].setdefault(case, clean(r["message"]))
    lines = [
        "# Bad input: what a user sees",
        "",
        "Every case below is a test: the command exits with status 2, prints one `error:` line that "
        "names the problem and the fix, no traceback, and the test checks that nothing half-written "
        "is left behind. The messages are recorded from the test run by "
        "`python scripts/robustness_table.py`; `<tmp>` stands for the test's temporary folder. "
        f"{len(records)} checks over {sum(len(c) for c in by_command.values())} cases.",
    ]
    for command in sorted(by_command):
        lines += ["", f"## `{command}`", "", "| case (test) | message |", "|---|---|"]
        for case, message in sorted(by_command[command].items()):
            lines.append(f"| `{case}` | {message} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=Path, help="the records of a test run (JSONL) instead of a new run")
    args = parser.parse_args()
    if args.records is None:
        records = record()
    else:
        lines = args.records.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    text = render(records)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
