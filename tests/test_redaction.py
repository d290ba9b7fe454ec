"""What may be shown of a URL: passwords, user-name tokens and secret query values hidden."""

from __future__ import annotations

import pytest

from monitor.config import Target
from monitor.redaction import redact, safe_url


class TestSafeUrl:
    @pytest.mark.parametrize(
        ("url", "safe"),
        [
            ("http://user:secret@host/path", "http://user:***@host/path"),
            ("https://user:secret@host:8443/", "https://user:***@host:8443/"),
            ("HTTP://user:secret@host/", "HTTP://user:***@host/"),
            ("Https://user:secret@host/", "Https://user:***@host/"),
            ("http://ghp_token123@host/", "http://***@host/"),
            ("http://host/path?a=b", "http://host/path?a=b"),
            ("http://host/?token=abc&a=b", "http://host/?token=***&a=b"),
            ("http://host/?a=b&Access_Token=abc#frag", "http://host/?a=b&Access_Token=***#frag"),
            ("http://host/?api_key=k1;key=k2&sig=s", "http://host/?api_key=***;key=***&sig=***"),
            ("http://host/?token=", "http://host/?token="),
            ("http://host/p#token=not-a-query", "http://host/p#token=not-a-query"),
        ],
    )
    def test_safe_url(self, url: str, safe: str) -> None:
        """safe_url hides every secret, in any case, and leaves everything else alone."""
        assert safe_url(url) == safe

    def test_password_containing_at(self) -> None:
        """A password with an unencoded '@' (as ${VAR} substitution produces) is hidden whole."""
        url = "http://user:p@ss@host/"
        assert Target(name="t", url=url).url == url  # the config accepts it
        assert safe_url(url) == "http://user:***@host/"
        assert redact("login p@ss refused", url) == "login *** refused"

    def test_target_computes_it_once(self) -> None:
        """Target.safe_url is the redacted URL, the same object on every use."""
        target = Target(name="t", url="HTTPS://u:pw@host/?token=abc")
        assert target.safe_url == "HTTPS://u:***@host/?token=***"
        assert target.safe_url is target.safe_url


class TestTargetRedact:
    def test_a_target_masks_its_urls_and_its_proxys_secrets_found_once(self) -> None:
        """Target.redact hides the secrets of the URL and of the proxy's URL (longest first),
        leaves an empty error as it is, and finds them once: secrets is the same object on
        every use."""
        target = Target(
            name="t",
            url="http://u:s3cr3t@host/?token=t0k3n",
            proxy="http://p:pr0xypass@proxy:3128",
        )
        text = "s3cr3t t0k3n pr0xypass s3cr3t2"
        assert target.redact(text) == "*** *** *** ***2"
        assert (target.redact(""), target.secrets is target.secrets) == ("", True)


class TestRedact:
    def test_redact(self) -> None:
        """redact removes the URL's password from any text and leaves other text alone."""
        url = "http://user:s3cr3t@host/"
        assert redact("failed for user:s3cr3t@host (s3cr3t)", url) == (
            "failed for user:***@host (***)"
        )
        assert redact("nothing to hide", url) == "nothing to hide"
        assert redact("s3cr3t", "http://host/") == "s3cr3t"

    def test_tokens_in_user_name_and_query_are_removed(self) -> None:
        """A token used as the user name and a secret query value never reach an error text,
        as written or percent-decoded."""
        url = "http://tok3n@host/?access_token=a%2Bb%2Bc&page=2"
        text = "GET http://tok3n@host/?access_token=a%2Bb%2Bc&page=2 failed (a+b+c)"
        assert redact(text, url) == "GET http://***@host/?access_token=***&page=2 failed (***)"

    def test_short_secrets_do_not_mangle_the_text(self) -> None:
        """A password under four characters is masked in the URL but not searched for in
        text, where it would eat digits of addresses."""
        url = "http://u:1@127.0.0.1/"
        assert safe_url(url) == "http://u:***@127.0.0.1/"
        assert redact("Cannot connect to host 127.0.0.1:80", url) == (
            "Cannot connect to host 127.0.0.1:80"
        )
