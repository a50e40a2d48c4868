"""Domain and object names become file names that never collide (issue #24 item 3)."""

import pytest

from synthrel.data.synthetic import check_folder_name, check_unique_keys, slugify
from synthrel.errors import ConfigError


def test_plain_names_keep_their_readable_key():
    assert slugify("fog") == "fog"
    assert slugify("polar bear") == "polar_bear"
    assert slugify("traffic_cone") == "traffic_cone"


@pytest.mark.parametrize("names", [["雪", "雨"], ["Fog", "fog"], ["sandstorm in Cairo", "sandstorm in cairo"],
                                   ["a-b", "a b!"], ["ñu", "nu"], ["", "🙂"]])
def test_names_that_lose_characters_still_get_distinct_keys(names):
    keys = [slugify(n) for n in names]
    assert len(set(keys)) == len(keys), keys
    assert all(k and k.isascii() and "/" not in k for k in keys)
    assert slugify(names[0]) == slugify(names[0])  # stable across calls (and processes: a sha256 of the text)


def test_names_sharing_a_key_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"'polar bear' and 'polar_bear' \(config key `ood_objects.objects`\)"):
        check_unique_keys(["zebra", "polar bear", "polar_bear"], "OOD object", "ood_objects.objects")


@pytest.mark.parametrize("name", ["", ".", "..", "fog/night", "x" * 256, "a\0b"])
def test_names_that_cannot_be_folders_are_refused(name):
    with pytest.raises(ConfigError, match=r"`domain.name` is .*cannot be a folder name"):
        check_folder_name(name, "domain.name")
    assert check_folder_name("雪", "domain.name") == "雪"
