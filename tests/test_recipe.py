"""recipe.parse_recipe: every mistake is a usage error (exit 2) before anything changes."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.errors import UsageError
from mirrormount.guest.recipe import RecipeMount, load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_shipped_recipe_parses():
    r = load_recipe(str(RECIPES / "thread-guest.toml"))
    assert r.hostname == "vserver1" and r.kinds == frozenset({"pid"}) and r.rootfs == "/"
    assert r.mounts == (RecipeMount("scratch", "/srv", "tmpfs", "size=16m"),
                        RecipeMount("private", "/mnt", "tmpfs", "size=16m,mode=0700",
                                    guest_only=True))
    req = r.request("c1")
    assert (req.name, req.all_kinds) == ("c1", ("uts", "pid", "mnt"))


def test_empty_recipe_is_the_defaults():
    r = parse_recipe("")
    assert (r.rootfs, r.hostname, r.kinds, r.propagation, r.mounts) == \
        ("/", None, frozenset(), "mirror", ())


@pytest.mark.parametrize("text,words", [
    ("[guest\n", "recipe"),                                       # TOML syntax
    ("[guest]\nhostnme = 'x'\n", "unknown key(s) hostnme"),
    ("[gust]\n", "unknown key(s) gust"),
    ("[guest]\nnamespaces = ['pid', 'user']\n", "unknown namespace kind(s) user"),
    ("[guest]\nnamespaces = 'pid'\n", "must be a list"),
    ("[guest]\npropagation = 'rshared'\n", "mirror or mirror+host"),
    ("[guest]\nhostname = 5\n", "hostname must be a string"),
    ("[[mount]]\ntarget = '/x'\ntype = 'tmpfs'\n", "source and target are required"),
    ("[[mount]]\nsource = 's'\ntarget = 'x'\ntype = 'tmpfs'\n", "give an absolute path inside the guest"),
    ("[[mount]]\nsource = 's'\ntarget = '/x'\n", "either type"),
    ("[[mount]]\nsource = 's'\ntarget = '/x'\ntype = 't'\nbind = true\n", "either type"),
    ("[[mount]]\nsource = 's'\ntarget = '/x'\ntype = 't'\nguest_only = 'yes'\n",
     "true or false"),
    ("mount = 3\n", "[[mount]]"),
    ("[[mount]]\nsource = 's'\ntarget = '/x'\ntype = 'tmpfs'\noptions = 'ro,rshared'\n",
     "[[mount]] #1: mount: option 'rshared' refused: mirrormount owns"),
    ("[[mount]]\nsource = '/s'\ntarget = '/x'\nbind = true\noptions = 'size=1m'\n",
     "unknown option 'size=1m'"),
])
def test_bad_recipes_are_usage_errors(text, words):
    with pytest.raises(UsageError) as err:
        parse_recipe(text)
    assert words in str(err.value)


def test_cli_refuses_recipe_with_flags_and_bad_files(tmp_path):
    runner = CliRunner()
    state = ["--base", str(tmp_path / "b"), "--state", str(tmp_path / "s")]
    r = runner.invoke(app, [*state, "create", "c1", "--recipe",
                            str(RECIPES / "thread-guest.toml"), "--hostname", "x"])
    assert r.exit_code == 2 and "either --recipe" in r.output
    r = runner.invoke(app, [*state, "create", "c1", "--recipe", str(tmp_path / "none.toml")])
    assert r.exit_code == 2 and "cannot read recipe" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[guest]\nnamespaces = ['user']\n")
    r = runner.invoke(app, [*state, "create", "c1", "--recipe", str(bad)])
    assert r.exit_code == 2 and "unknown namespace" in r.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "s").exists()
