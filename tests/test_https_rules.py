"""HTTPS at the front, without an engine: the checks of a certificate and its key, the client's
rules for when HTTPS is chosen and replaced, and what the front's configuration says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException

from mlflow_docker_target import record
from mlflow_docker_target.runtimes import certificates, haproxy
from tests.helpers.fake_runtime import installed, recorded
from tests.helpers.tls_files import Pair, make_ca, make_cert, make_expired

MODEL = "runs:/0123456789abcdef/model"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory)
    return {"ca": ca, "fake": make_cert(directory, ca, "fake", "fake"),
            "renewed": make_cert(directory, ca, "renewed", "fake"),
            "other": make_cert(directory, ca, "other", "other.example"),
            "ip": make_cert(directory, ca, "ip", "10.1.2.3"),
            "expired": make_expired(directory, "fake")}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    with installed(monkeypatch) as pair:
        yield pair


def _https(pair: Pair) -> dict[str, str]:
    return {"https_cert": str(pair.cert), "https_key": str(pair.key)}


def test_a_good_pair_loads_with_its_chain_and_names(files) -> None:
    loaded = certificates.load(str(files["fake"].cert), str(files["fake"].key))
    certificates.check_covers(loaded, "fake", "x")
    certificates.check_covers(certificates.load(str(files["ip"].cert), str(files["ip"].key)),
                              "10.1.2.3", "x")
    shown = certificates.describe(loaded.chain.decode())
    assert shown["names"] == ["fake"] and len(shown["sha256"]) == 64
    assert loaded.pem().startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in loaded.pem() and b"PRIVATE KEY" not in loaded.chain
    assert "PRIVATE" not in repr(loaded)


@pytest.mark.parametrize(("cert", "key", "says"), [
    ("fake", "other", "does not match the key"),
    ("expired", "expired", "expired on"),
    ("missing", "fake", "Cannot read -C https_cert"),
    ("fake", "missing", "Cannot read -C https_key"),
    ("fake", "fake-cert-as-key", "holds no PEM private key"),
    ("fake-key-as-cert", "fake", "holds no PEM certificate"),
])
def test_bad_pairs_say_which_file_and_what_to_do(files, tmp_path, cert, key, says) -> None:
    def path(name: str, part: str) -> str:
        if name == "missing":
            return str(tmp_path / "nowhere.pem")
        if name == "fake-cert-as-key":
            return str(files["fake"].cert)
        if name == "fake-key-as-cert":
            return str(files["fake"].key)
        return str(getattr(files[name], part))

    with pytest.raises(MlflowException, match=says) as caught:
        certificates.load(path(cert, "cert"), path(key, "key"))
    assert "openssl" in caught.value.message or "Cannot read" in caught.value.message


def test_an_unreadable_file_is_refused(files, tmp_path) -> None:
    # a directory: unreadable whoever runs the test (root reads a file of mode 000)
    with pytest.raises(MlflowException, match=r"Cannot read -C https_key.*Is a directory"):
        certificates.load(str(files["fake"].cert), str(tmp_path))


def test_an_encrypted_key_is_refused_with_the_command_that_decrypts_it(files, tmp_path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files["fake"].key.read_bytes(), None)
    locked = tmp_path / "encrypted.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    with pytest.raises(MlflowException, match=r"is encrypted.*openssl pkey"):
        certificates.load(str(files["fake"].cert), str(locked))


@pytest.mark.parametrize(("names", "host", "covered"), [
    (["fake"], "fake", True), (["fake"], "FAKE.", True), (["fake"], "other", False),
    (["*.example.com"], "a.example.com", True), (["*.example.com"], "a.b.example.com", False),
    (["*.example.com"], "example.com", False),
])
def test_names_match_as_clients_match_them(names, host, covered) -> None:
    from cryptography import x509

    san = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
    leaf = type("Leaf", (), {"extensions": x509.Extensions([x509.Extension(
        x509.SubjectAlternativeName.oid, False, san)])})()
    assert certificates.covers(leaf, host) is covered


def test_a_certificate_for_another_host_is_refused_before_a_build(fake, files) -> None:
    client, runtime = fake
    with pytest.raises(MlflowException, match=r"does not name fake.*subjectAltName includes "
                                              r"DNS:fake.*-C host_address"):
        client.create_deployment("d", MODEL, config=_https(files["other"]))
    assert runtime.called("build") == [] and runtime.deployments_ == {}
    # the name the URL will carry is what counts
    client.create_deployment("d", MODEL, config={**_https(files["other"]),
                                                 "host_address": "other.example"})


def test_https_deployment_records_no_file_and_shows_its_certificate(fake, files) -> None:
    client, runtime = fake
    made = client.create_deployment("d", MODEL, config=_https(files["fake"]))
    assert made["endpoint"].startswith("https://")
    assert made["certificate"]["names"] == ["fake"]
    shown = json.dumps(client.get_deployment("d"))
    assert "PRIVATE KEY" not in shown and "https_key" not in shown
    labels = runtime.find("d").labels
    assert "https" not in labels[record.CONFIG]
    version, _ = runtime.called("roll_out")[-1]
    assert version.tls is not None and version.tls.key == files["fake"].key.read_bytes()


def test_a_new_certificate_alone_keeps_the_replicas(fake, files) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL, config={**_https(files["fake"]), "workers": "2"})
    before = client.get_deployment("d")["certificate"]["sha256"]
    answer = client.update_deployment("d", config=_https(files["renewed"]))
    version, _ = runtime.called("scale")[-1]
    assert version.tls is not None and len(runtime.called("build")) == 1
    assert answer["certificate"]["sha256"] != before
    assert recorded(runtime.find("d")) == {"workers": "2"}
    client.update_deployment("d", config={"workers": "3"})  # no keys: the front keeps its own
    version, _ = runtime.called("roll_out")[-1]
    assert version.tls is None
    assert client.get_deployment("d")["endpoint"].startswith("https://")


@pytest.mark.parametrize(("config", "says"), [
    ({"https_cert": ""}, "cannot turn it off"),
    ({"https_cert": "", "https_key": ""}, "cannot turn it off"),
    ({"https_key": "/x.key"}, "go together"),
])
def test_https_is_not_turned_off(fake, files, config, says) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL, config=_https(files["fake"]))
    with pytest.raises(MlflowException, match=says):
        client.update_deployment("d", config=config)
    assert len(runtime.called("build")) == 1 and runtime.called("scale") == []


def test_https_is_not_turned_on_later(fake, files) -> None:
    client, runtime = fake
    client.create_deployment("d", MODEL)
    with pytest.raises(MlflowException, match=r"serves plain HTTP.*delete it and create it"):
        client.update_deployment("d", config=_https(files["fake"]))
    client.create_endpoint("ep")
    with pytest.raises(MlflowException, match="serves plain HTTP"):
        client.update_endpoint("ep", config=_https(files["fake"]))
    assert len(runtime.called("build")) == 1 and runtime.called("reconfigure") == []


def test_a_shared_endpoint_takes_https_at_create_endpoint_and_update_endpoint(fake,
                                                                              files) -> None:
    client, _ = fake
    made = client.create_endpoint("ep", config=_https(files["fake"]))
    assert made["url"].startswith("https://") and made["certificate"]["names"] == ["fake"]
    with pytest.raises(MlflowException, match=r"belongs to endpoint 'ep'.*update-endpoint"):
        client.create_deployment("e1", MODEL, endpoint="ep", config=_https(files["fake"]))
    client.create_deployment("e1", MODEL, endpoint="ep")
    assert client.get_deployment("e1")["endpoint"].startswith("https://")
    client.update_endpoint("ep", config=_https(files["renewed"]))
    assert client.get_endpoint("ep")["certificate"]["sha256"] == certificates.describe(
        files["renewed"].cert.read_text())["sha256"]
    with pytest.raises(MlflowException, match="expired"):
        client.update_endpoint("ep", config=_https(files["expired"]))


def test_the_front_serves_tls_only_with_mozillas_intermediate_profile() -> None:
    backends = [haproxy.Backend("d", 1, 60, (haproxy.Server(1),))]
    plain = haproxy.render("e", backends)
    assert " ssl " not in plain and "ssl-default-bind" not in plain
    served = haproxy.render("e", backends, tls="/run/secrets/tls.pem")
    assert f"    bind :{haproxy.FRONT_PORT} ssl crt /run/secrets/tls.pem alpn http/1.1" in served
    assert "no-sslv3 no-tlsv10 no-tlsv11" in served
    assert "ECDHE-RSA-AES128-GCM-SHA256" in served and "CBC" not in served


def test_predictions_verify_with_the_bundle_the_environment_names(monkeypatch) -> None:
    from mlflow_docker_target import scoring_client

    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert scoring_client.trust() is True
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ca.pem")
    assert scoring_client.trust() == "/etc/ca.pem"


def test_a_pinned_context_trusts_the_leaf_it_was_given(files) -> None:
    import ssl

    context = certificates.pinned(Path(files["fake"].cert).read_text())
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
