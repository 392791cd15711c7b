"""Loading a project file: formats, values, variables and error messages."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from overture.config import load_project, read_env_file
from overture.config.dotenv import parse_env
from overture.config.interpolate import expand
from overture.config.model import Condition, OnFailure, Project
from overture.errors import ConfigError

# A one-service file is the smallest valid project; most tests extend it.
API = '[services.api]\ncommand = ["run"]\n'


def _load(
    tmp_path: Path,
    text: str,
    name: str = "overture.toml",
    environ: dict[str, str] | None = None,
) -> Project:
    (tmp_path / name).write_text(text)
    return load_project(Path(name), cwd=tmp_path, environ=environ or {})


def _error(
    tmp_path: Path,
    text: str,
    name: str = "overture.toml",
    environ: dict[str, str] | None = None,
) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, name, environ)
    return str(caught.value)


# Finding the file


def test_missing_config_names_the_directory(tmp_path: Path) -> None:
    """Without -f and without a config file, the error names the directory."""
    with pytest.raises(ConfigError) as caught:
        load_project(cwd=tmp_path, environ={})
    assert str(caught.value) == (
        f"no overture.toml (or .yaml/.yml/.json) in {tmp_path}; "
        "create one or pass -f FILE"
    )


def test_missing_given_file_names_it(tmp_path: Path) -> None:
    """A -f file that does not exist is named as the user gave it."""
    with pytest.raises(ConfigError) as caught:
        load_project(Path("x.toml"), cwd=tmp_path, environ={})
    assert str(caught.value) == "config file 'x.toml' does not exist"


def test_toml_is_found_before_yaml(tmp_path: Path) -> None:
    """Without -f, overture.toml wins over overture.yaml in the same directory."""
    (tmp_path / "overture.yaml").write_text("services: {}\n")
    (tmp_path / "overture.toml").write_text(API)
    project = load_project(cwd=tmp_path, environ={})
    assert project.source == (tmp_path / "overture.toml").resolve()
    assert list(project.services) == ["api"]


def test_root_is_the_config_directory(tmp_path: Path) -> None:
    """`root` is the resolved directory of the config file, wherever cwd is."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "overture.toml").write_text(API)
    project = load_project(Path("sub/overture.toml"), cwd=tmp_path, environ={})
    assert project.root == (tmp_path / "sub").resolve()
    assert project.state_dir == (tmp_path / "sub" / ".overture").resolve()


def test_unknown_suffix_is_an_error(tmp_path: Path) -> None:
    """A -f file with an unknown suffix says which suffixes are understood."""
    message = _error(tmp_path, API, name="overture.conf")
    assert message == (
        "config file 'overture.conf' has an unknown format; "
        "name it with one of: .toml, .yaml, .yml, .json"
    )


# Formats

TOML_PROJECT = """
[services.db]
preset = "postgres"
port = 5433

[services.api]
command = ["python", "-m", "api"]
env = { PORT = 8000, DEBUG = true }
depends_on = { db = "healthy" }
ready = { http = "http://127.0.0.1:8000/health", interval = "250ms" }
stop = { signal = "INT", timeout = "1m30s" }

[profiles]
dev = ["api"]
"""

YAML_PROJECT = """
services:
  db:
    preset: postgres
    port: 5433
  api:
    command: [python, -m, api]
    env: {PORT: 8000, DEBUG: true}
    depends_on: {db: healthy}
    ready: {http: "http://127.0.0.1:8000/health", interval: 250ms}
    stop: {signal: INT, timeout: 1m30s}
profiles:
  dev: [api]
"""


def test_toml_yaml_and_json_load_equal_projects(tmp_path: Path) -> None:
    """The same project written in TOML, YAML and JSON loads to equal models."""
    from_toml = _load(tmp_path, TOML_PROJECT, "overture.toml")
    from_yaml = _load(tmp_path, YAML_PROJECT, "overture.yaml")
    as_json = json.dumps(
        {
            "services": {
                "db": {"preset": "postgres", "port": 5433},
                "api": {
                    "command": ["python", "-m", "api"],
                    "env": {"PORT": 8000, "DEBUG": True},
                    "depends_on": {"db": "healthy"},
                    "ready": {
                        "http": "http://127.0.0.1:8000/health",
                        "interval": "250ms",
                    },
                    "stop": {"signal": "INT", "timeout": "1m30s"},
                },
            },
            "profiles": {"dev": ["api"]},
        },
        indent=2,
    )
    from_json = _load(tmp_path, as_json, "overture.json")

    assert from_toml.model_copy(update={"source": None}) == from_yaml.model_copy(
        update={"source": None}
    )
    assert from_toml.model_copy(update={"source": None}) == from_json.model_copy(
        update={"source": None}
    )
    api = from_toml.services["api"]
    assert api.env == {"PORT": "8000", "DEBUG": "true"}
    assert api.stop.signal is signal.SIGINT
    assert api.stop.timeout == 90.0


# Values


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"250ms"', 0.25), ('"1m30s"', 90.0), ("2", 2.0), ('"1.5"', 1.5)],
)
def test_durations(tmp_path: Path, written: str, seconds: float) -> None:
    """Durations take units, plain seconds, or seconds as text."""
    project = _load(tmp_path, API + f"startup_timeout = {written}\n")
    assert project.services["api"].startup_timeout == seconds


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (
            '"10 parsecs"',
            "'10 parsecs' is not a duration; use a number of seconds or a string "
            "like '500ms', '10s', '2m', '1h30m' (units: ms, s, m, h)",
        ),
        ("-1", "-1 is not a duration; it must be finite and >= 0"),
        ("nan", "nan is not a duration; it must be finite and >= 0"),
    ],
)
def test_bad_durations(tmp_path: Path, written: str, problem: str) -> None:
    """A bad duration is reported with its path, line and the accepted forms."""
    message = _error(tmp_path, API + f"[services.api.stop]\ntimeout = {written}\n")
    assert message == f"overture.toml:4: services.api.stop.timeout: {problem}"


@pytest.mark.parametrize(
    ("written", "expected"),
    [('"SIGINT"', signal.SIGINT), ('"int"', signal.SIGINT), ("15", signal.SIGTERM)],
)
def test_signals(tmp_path: Path, written: str, expected: signal.Signals) -> None:
    """A stop signal is a name, with or without SIG, in any case, or a number."""
    project = _load(tmp_path, API + f"stop.signal = {written}\n")
    assert project.services["api"].stop.signal is expected


def test_unknown_signal_lists_the_valid_ones(tmp_path: Path) -> None:
    """An unknown signal name is an error that lists every valid signal."""
    valid = sorted(s.name for s in signal.Signals if not s.name.startswith("SIGRT"))
    message = _error(tmp_path, API + 'stop.signal = "SIGFOO"\n')
    assert message == (
        "overture.toml:3: services.api.stop.signal: 'SIGFOO' is not a signal; "
        f"valid signals: {', '.join(valid)}"
    )


def test_depends_on_forms(tmp_path: Path) -> None:
    """depends_on may be a list, a table of conditions, or a table of tables."""
    project = _load(
        tmp_path,
        API
        + '[services.a]\ncommand = ["a"]\ndepends_on = ["api"]\n'
        + '[services.b]\ncommand = ["b"]\ndepends_on = { api = "healthy" }\n'
        + '[services.c]\ncommand = ["c"]\n'
        + '[services.c.depends_on.api]\ncondition = "completed"\n'
        + 'required = false\non_failure = "restart"\n',
    )
    a, b, c = (project.services[name].depends_on["api"] for name in "abc")
    assert a.condition is Condition.STARTED
    assert b.condition is Condition.HEALTHY
    assert (c.condition, c.required, c.on_failure) == (
        Condition.COMPLETED,
        False,
        OnFailure.RESTART,
    )


def test_command_string_needs_shell(tmp_path: Path) -> None:
    """A string command without shell = true is an error at the service's line."""
    message = _error(tmp_path, '\n[services.api]\ncommand = "run --fast"\n')
    assert message == (
        "overture.toml:2: services.api: command is a string but shell is false; "
        'give an argument list (command = ["prog", "arg"]) or set shell = true'
    )


def test_command_string_with_shell_runs_through_sh(tmp_path: Path) -> None:
    """With shell = true a string command becomes /bin/sh -c."""
    project = _load(tmp_path, '[services.api]\ncommand = "a | b"\nshell = true\n')
    assert project.services["api"].argv() == ["/bin/sh", "-c", "a | b"]


# Error messages


def test_unknown_key_in_header_table(tmp_path: Path) -> None:
    """A misspelt key names its line and the nearest valid key."""
    text = "# api\n\n" + API + "\n[services.api.stop]\ntimout = 3\n"
    assert _error(tmp_path, text) == (
        "overture.toml:7: services.api.stop.timout: unknown key 'timout'; "
        "did you mean 'timeout'?"
    )


def test_unknown_key_in_inline_table(tmp_path: Path) -> None:
    """A misspelt key inside an inline table gets the inline table's line."""
    text = API + "\n\nstop = { signal = 'TERM', timeot = 3 }\n"
    assert _error(tmp_path, text) == (
        "overture.toml:5: services.api.stop.timeot: unknown key 'timeot'; "
        "did you mean 'timeout'?"
    )


def test_unknown_key_without_near_match_lists_valid_keys(tmp_path: Path) -> None:
    """An unknown key with no close match lists every valid key at that level."""
    assert _error(tmp_path, API + "stop.zzz = 1\n") == (
        "overture.toml:3: services.api.stop.zzz: unknown key 'zzz'; "
        "valid keys: command, signal, timeout"
    )


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    """In YAML the line of an unknown key comes from the parser's marks."""
    text = "services:\n  api:\n    command: [run]\n\n    dependson: [db]\n"
    assert _error(tmp_path, text, name="overture.yaml") == (
        "overture.yaml:5: services.api.dependson: unknown key 'dependson'; "
        "did you mean 'depends_on'?"
    )


def test_unknown_key_in_json(tmp_path: Path) -> None:
    """In JSON the line of an unknown key is where the key is written."""
    text = json.dumps({"services": {"api": {"command": ["run"], "shel": 1}}}, indent=1)
    assert _error(tmp_path, text, name="overture.json") == (
        "overture.json:7: services.api.shel: unknown key 'shel'; did you mean 'shell'?"
    )


def test_multiline_strings_do_not_confuse_lines(tmp_path: Path) -> None:
    """Text inside multi-line strings and arrays is not mistaken for keys."""
    text = (
        "[services.api]\n"
        'command = [\n  "sh",\n  """\n[services.fake]\nportt = 1\n""",\n]\n'
        "shell = false\n"
        "portt = 2\n"
    )
    assert _error(tmp_path, text) == (
        "overture.toml:10: services.api.portt: unknown key 'portt'; "
        "did you mean 'port'?"
    )


def test_array_of_tables_lines(tmp_path: Path) -> None:
    """Each [[array]] element is located on its own header's line."""
    text = (
        '[services.k]\npreset = "kafka"\n'
        '[[services.k.topics]]\nname = "a"\n'
        '[[services.k.topics]]\nname = "b"\npartitions = 0\n'
    )
    assert _error(tmp_path, text) == (
        "overture.toml:7: services.k.topics[1].partitions: must be >= 1, got 0"
    )


def test_wrong_type(tmp_path: Path) -> None:
    """A value of the wrong type names what was expected and what was given."""
    assert _error(tmp_path, API + 'port = "abc"\n') == (
        "overture.toml:3: services.api.port: expected an integer, got 'abc'"
    )


def test_wrong_item_type_in_a_union(tmp_path: Path) -> None:
    """A list command with a bad item points at the item, not the union."""
    assert _error(tmp_path, '[services.api]\ncommand = ["run", 1]\n') == (
        "overture.toml:2: services.api.command[1]: expected a string, got 1"
    )


def test_bad_enum_lists_choices(tmp_path: Path) -> None:
    """A bad condition names the value and the valid choices."""
    text = (
        API + "\n[services.db]\ncommand = ['db']\ndepends_on.x.condition = 'heathy'\n"
    )
    assert _error(tmp_path, text) == (
        "overture.toml:6: services.db.depends_on.x.condition: 'heathy' is not "
        "valid; valid choices: started, healthy, completed"
    )


def test_yaml_bare_no_hints_at_quoting(tmp_path: Path) -> None:
    """YAML's bare `no` is a boolean; the message says to quote it."""
    text = "services:\n  api:\n    command: [run]\n    restart: {policy: no}\n"
    assert _error(tmp_path, text, name="overture.yaml") == (
        "overture.yaml:4: services.api.restart.policy: false is not valid; "
        "valid choices: no, on-failure, always "
        "(YAML reads a bare yes/no/on/off as a boolean; quote it)"
    )


def test_every_problem_on_its_own_line_in_file_order(tmp_path: Path) -> None:
    """All problems come in one error, one per line, sorted by line."""
    # pydantic reports in field order: command, port, restart.
    text = "[services.api]\nrestart.max = -1\nport = 0\ncommand = 5\n"
    assert _error(tmp_path, text).splitlines() == [
        "overture.toml:2: services.api.restart.max: must be >= 0, got -1",
        "overture.toml:3: services.api.port: must be >= 1, got 0",
        "overture.toml:4: services.api.command: expected a list or a string, got 5",
    ]


def test_missing_services(tmp_path: Path) -> None:
    """A file without services says the key is required."""
    assert _error(tmp_path, "[profiles]\n") == (
        "overture.toml:1: missing required key 'services'"
    )


def test_root_cannot_be_written(tmp_path: Path) -> None:
    """`root` is set by the loader; writing it in the file is an unknown key."""
    assert _error(tmp_path, 'root = "/"\n' + API) == (
        "overture.toml:1: root: unknown key 'root'; valid keys: profiles, services"
    )


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    """A TOML syntax error gives the file, the line and tomllib's message."""
    assert _error(tmp_path, API + "port = \n") == (
        "overture.toml:3: TOML syntax error: Invalid value (column 8)"
    )


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    """A YAML syntax error gives the file, the line and the parser's message."""
    text = "services:\n  api:\n    command: [run\n  db: 1\n"
    assert _error(tmp_path, text, name="overture.yaml") == (
        "overture.yaml:4: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence)"
    )


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    """A JSON syntax error gives the file, the line and the parser's message."""
    assert _error(tmp_path, '{"services":\n {,}}', name="overture.json") == (
        "overture.json:2: JSON syntax error: Expecting property name enclosed "
        "in double quotes (column 3)"
    )


# Variables


def test_interpolation_forms() -> None:
    """Each ${...} form substitutes as docker compose does."""
    variables = {"SET": "v", "EMPTY": ""}
    cases = {
        "${SET}": "v",
        "$SET/x": "v/x",
        "${UNSET}": "",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "${UNSET-d}": "d",
        "${UNSET:-${SET}}": "v",
        "${SET:+alt}": "alt",
        "${EMPTY:+alt}": "",
        "${EMPTY+alt}": "alt",
        "$$SET costs $$5": "$SET costs $5",
    }
    assert {text: expand(text, variables) for text in cases} == cases


def test_interpolation_in_a_config(tmp_path: Path) -> None:
    """String values anywhere in the file are interpolated; numbers convert."""
    text = (
        '[services.api]\ncommand = ["run", "--port", "${PORT}", "$$HOME"]\n'
        'port = "${PORT}"\nstop.timeout = "${GRACE:-5}"\n'
    )
    api = _load(tmp_path, text, environ={"PORT": "8080"}).services["api"]
    assert api.command == ["run", "--port", "8080", "$HOME"]
    assert (api.port, api.stop.timeout) == (8080, 5.0)


def test_required_variable_error_names_file_line_and_variable(tmp_path: Path) -> None:
    """${VAR:?message} fails with the file, the line, the key and the variable."""
    text = API + '\n[services.api.env]\nDB = "${DB_URL:?set it in .env}"\n'
    assert _error(tmp_path, text, environ={"DB_URL": ""}) == (
        "overture.toml:5: services.api.env.DB: variable DB_URL is not set or "
        "empty: set it in .env"
    )


def test_unset_variable_is_empty_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unset ${VAR} becomes an empty string and logs a warning naming it."""
    text = '[services.api]\ncommand = ["run"]\nenv.TOKEN = "${TOKEN}"\n'
    project = _load(tmp_path, text)
    assert project.services["api"].env == {"TOKEN": ""}
    assert caplog.messages == [
        "variable=TOKEN is not set; substituting an empty string"
    ]


def test_lone_dollar_is_an_error(tmp_path: Path) -> None:
    """A `$` not followed by a name, `{` or `$` is an error suggesting `$$`."""
    text = "[services.api]\ncommand = \"awk '{print $1}'\"\nshell = true\n"
    assert _error(tmp_path, text) == (
        "overture.toml:2: services.api.command: '$' in \"awk '{print $1}'\" must "
        "be followed by a name, '{' or '$'; write '$$' for a literal '$'"
    )


def test_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    """Variables come from .env next to the config, overridden by the process."""
    (tmp_path / ".env").write_text("A=from-file\nB=from-file\n")
    text = '[services.api]\ncommand = ["run", "${A}", "${B}"]\n'
    project = _load(tmp_path, text, environ={"B": "from-env"})
    assert project.services["api"].command == ["run", "from-file", "from-env"]


def test_dotenv_syntax() -> None:
    """.env takes comments, export, both quotes, escapes and multi-line values."""
    text = (
        "# a comment\n\n"
        "export PLAIN = some value # trailing comment\n"
        "HASH=a#b\n"
        "SINGLE='raw \\n $x'\n"
        'DOUBLE="line\\nnext \\"q\\""\n'
        'MULTI="one\ntwo"\n'
        "EMPTY=\n"
    )
    assert parse_env(text) == {
        "PLAIN": "some value",
        "HASH": "a#b",
        "SINGLE": "raw \\n $x",
        "DOUBLE": 'line\nnext "q"',
        "MULTI": "one\ntwo",
        "EMPTY": "",
    }


def test_dotenv_bad_line_names_file_and_line(tmp_path: Path) -> None:
    """A .env line that is not KEY=VALUE is an error with its line."""
    (tmp_path / ".env").write_text("A=1\nnot a pair\n")
    assert _error(tmp_path, API) == (".env:2: expected KEY=VALUE, got 'not a pair'")


def test_dotenv_unclosed_quote(tmp_path: Path) -> None:
    """A quoted .env value that never closes names the line it opens on."""
    (tmp_path / ".env").write_text('A=1\nB="open\nstill open\n')
    assert _error(tmp_path, API) == '.env:2: the closing " is missing'


def test_env_file_is_checked_and_made_absolute(tmp_path: Path) -> None:
    """A service's env_file resolves against the config directory and reads."""
    (tmp_path / "api.env").write_text("TOKEN='s3cret'\n")
    project = _load(tmp_path, API + 'env_file = "api.env"\n')
    (env_file,) = project.services["api"].env_file
    assert env_file == project.root / "api.env"
    assert read_env_file(env_file) == {"TOKEN": "s3cret"}


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    """A missing env_file is named, with its line, when the project loads."""
    assert _error(tmp_path, API + 'env_file = ["missing.env"]\n') == (
        "overture.toml:3: services.api.env_file: env file 'missing.env' does not exist"
    )


def test_read_env_file_missing(tmp_path: Path) -> None:
    """read_env_file names a missing file."""
    with pytest.raises(ConfigError) as caught:
        read_env_file(tmp_path / "gone.env")
    assert str(caught.value) == f"env file '{tmp_path / 'gone.env'}' does not exist"
