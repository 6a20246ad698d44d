"""Unknown PATRON_* environment variables refuse start-up, naming the closest known setting."""
import pytest

from app.config import ConfigError, load_config


def test_a_misspelt_setting_refuses_to_start_and_names_the_closest(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(str(tmp_path), environ={"PATRON_DATABSE_URL": "postgresql://db/prod"})
    assert "PATRON_DATABSE_URL" in str(exc.value) and "did you mean PATRON_DATABASE_URL?" in str(exc.value)
    with pytest.raises(ConfigError, match="PATRON_NONSENSE: unknown setting"):
        load_config(str(tmp_path), environ={"PATRON_NONSENSE": "1"})


def test_names_that_are_not_settings_are_allowed(tmp_path):
    env = {"PATRON_KEY": "ptr_x", "PATRON_TEST_DATABASE": "postgres", "PATRON_BENCH_POSTGRES_URL": "x",
           "PATRON_RULES_ENGINE": "reference", "PATRON_DB_CONNECT_TIMEOUT": "3", "PATRON_WEBHOOK_ALLOW_PRIVATE": "yes"}
    cfg = load_config(str(tmp_path), environ=env)
    assert cfg["RULES_ENGINE"] == "reference" and cfg["DB_CONNECT_TIMEOUT"] == 3 and cfg["WEBHOOK_ALLOW_PRIVATE"]


def test_a_misspelt_key_in_the_config_file_names_the_closest_too(tmp_path):
    (tmp_path / "config.yaml").write_text("databse_url: sqlite:///x.db\n")
    with pytest.raises(ConfigError, match="did you mean PATRON_DATABASE_URL"):
        load_config(str(tmp_path), environ={})
