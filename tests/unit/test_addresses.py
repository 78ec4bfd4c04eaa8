"""Recipient lists: splitting the list-or-comma-string form and checking each address's syntax."""

from __future__ import annotations

import pytest
from mailproxy.addresses import (
    address_domain,
    bare_address,
    find_addresses,
    first_address,
    is_valid_address,
    split_addresses,
)


def test_a_comma_string_is_split_and_trimmed() -> None:
    assert split_addresses("a@b.test, c@d.test ,e@f.test") == ["a@b.test", "c@d.test", "e@f.test"]


def test_a_comma_inside_a_quoted_display_name_does_not_split() -> None:
    assert split_addresses('"Doe, John" <john@x.test>, k@y.test') == ['"Doe, John" <john@x.test>', "k@y.test"]


def test_each_list_entry_may_itself_be_a_comma_string() -> None:
    assert split_addresses(["a@b.test, c@d.test", "e@f.test"]) == ["a@b.test", "c@d.test", "e@f.test"]


@pytest.mark.parametrize("empty", [None, "", " ", " , ", [], [""], ["", " "]])
def test_empty_recipient_fields_have_no_entries(empty: str | list[str] | None) -> None:
    assert split_addresses(empty) == []


@pytest.mark.parametrize(
    "address",
    [
        "a@b.test",
        "first.last+tag@sub.example.test",
        "Acme <noreply@acme.test>",
        '"Doe, John" <john@x.test>',
        "<bare@angle.test>",
        '"quoted local"@x.test',
        "user@[127.0.0.1]",
        "üser@exämple.test",
        "o'brien@x.test",
    ],
)
def test_valid_addresses_are_accepted(address: str) -> None:
    assert is_valid_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "plainaddress",
        "a@b",
        "@b.test",
        "a@",
        "a b@c.test",
        "a@b..test",
        "a.@b.test",
        "a@-b.test",
        "Name a@b.test",
        "a@b.test>",
        "a@b.test\r\nBcc: victim@x.test",
        "a@b.test\x00",
        "x" * 990 + "@b.test",
        # 300 characters, 1209 octets: a key DynamoDB refuses (1024 bytes), and no SMTP path holds it.
        '"' + "\U0001f600" * 300 + '"@x.test',
        "é" * 200 + "@x.test",  # 200 characters, 400 octets in UTF-8
    ],
)
def test_invalid_addresses_are_refused(address: str) -> None:
    assert not is_valid_address(address)


def test_the_bare_address_drops_the_display_name() -> None:
    assert bare_address("Acme <noreply@acme.test>") == "noreply@acme.test"
    assert bare_address(" a@b.test ") == "a@b.test"


def test_the_domain_of_an_address_is_what_follows_its_last_at_sign() -> None:
    assert address_domain('"Acme, Inc." <noreply@mail.acme.test>') == "mail.acme.test"
    assert address_domain("a@b.test") == "b.test"
    assert address_domain("") == ""


def test_deeply_nested_comments_are_invalid_not_a_crash() -> None:
    assert not is_valid_address("(" * 997)
    assert not is_valid_address("(" * 600 + "a@b.test" + ")" * 389)


def test_addresses_in_free_text_are_found_lowercased_with_where_each_mention_ends() -> None:
    text = "<Bob@Example.TEST>: host mx.example.test said: 550 no such user (carol@example.test)"
    found = list(find_addresses(text))
    assert [address for address, _ in found] == ["bob@example.test", "carol@example.test"]
    assert text[found[0][1] :].startswith(": host")  # the brackets belong to the mention
    assert first_address("rfc822; Dave@Example.test") == "dave@example.test"
    assert first_address("no address here") == ""
