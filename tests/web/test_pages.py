"""What users check on the console and the portal (REQ-EASY, REQ-MON-60MIN, REQ-IR-STEPS)."""

from __future__ import annotations

from otasuke.tenancy.roles import Role
from tests.web.conftest import SERIOUS_AUTHOR, TestClient, World, login


def test_portal_shows_action_needed_for_tokai_parts(clients: dict[Role, TestClient]) -> None:
    page = clients[Role.CUSTOMER_ADMIN].get("/portal")
    assert page.status_code == 200
    assert (
        "要対応" in page.text and "安全" not in page.text.split("<main>")[1].split("</section>")[0]
    )
    assert "東海精密部品株式会社" in page.text
    assert (
        "攻撃者がよく使うやり方でプログラムが起動されました" in page.text
    )  # explain(), not the rule


def test_portal_shows_safe_without_serious_open_incidents(world: World) -> None:
    for email in ("admin@sakura-clinic.example.jp", "admin@yamada-office.example.jp"):
        page = login(world.app, email).get("/portal")
        assert "安全" in page.text and "要対応" not in page.text


def test_portal_incident_in_plain_words_with_attribution(
    world: World, clients: dict[Role, TestClient]
) -> None:
    page = clients[Role.CUSTOMER_USER].get(f"/portal/incidents/{world.incidents['tokai-serious']}")
    assert page.status_code == 200
    text = page.text
    assert "攻撃者がよく使うやり方でプログラムが起動されました" in text
    assert "パソコンの電源は切らないでください" in text
    assert "PC-SOUMU-01" in text
    assert f"作成者: {SERIOUS_AUTHOR}" in text and "DRL-1.1" in text


def test_portal_contract_and_devices(clients: dict[Role, TestClient]) -> None:
    client = clients[Role.CUSTOMER_ADMIN]
    contract = client.get("/portal/contract").text
    for expected in ("月額料金 (税抜)", "54,800円", "12か月", "3,000,000円", "0120-000-000"):
        assert expected in contract
    devices = client.get("/portal/devices").text
    assert "正常" in devices and "ログが届いていません" in devices


def test_console_queue_sorted_by_deadline_with_countdown(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.ANALYST].get("/console/incidents").text
    assert text.index("Known Emotet C2") < text.index("Suspicious Encoded PowerShell")
    assert "残り " in text and "data-deadline" in text
    assert "通知済み" in text and "SLA 達成" in text
    assert "重大" in text and "防御済み" in text and "情報" in text
    assert 'hx-trigger="every 30s"' in text


def test_console_incident_detail(world: World, clients: dict[Role, TestClient]) -> None:
    text = clients[Role.ANALYST].get(f"/console/incidents/{world.incidents['tokai-serious']}").text
    assert "ルール: Suspicious Encoded PowerShell Command Line" in text
    assert f"作成者: {SERIOUS_AUTHOR}" in text and "ライセンス: DRL-1.1" in text
    for step in ("発見報告", "初動", "調査・対応", "復旧", "最終報告"):
        assert step in text
    assert 'aria-current="step"' in text and "次の段階へ進める" in text
    assert "元のログ" in text and "<details" in text


def test_console_customer_detail_has_every_package_item(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.PROVIDER_ADMIN].get("/console/customers/tokai-parts").text
    for item in (
        "1類",
        "ネットワーク監視・端末監視",
        "初期費用 (税抜)",
        "150,000円",
        "30",
        "最低利用期間",
        "解約金 (中途解約)",
        "20,000円",
        "解約の条件",
        "Fortinet",
        "FortiGate 60F",
        "サービス提供国",
        "データの保存国",
        "3,000,000円",
        "鈴木 一郎",
        "osk_",
    ):
        assert item in text, item


def test_console_customers_list_marks_silent_sensors(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.RESELLER_STAFF].get("/console/customers").text
    assert "さくら内科クリニック" in text and "みなとITサービス株式会社" in text
    assert 'class="silent"' in text


def test_partner_technician_sees_no_customer_data(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.PARTNER_TECHNICIAN].get("/console").text
    assert "まだ担当の作業はありません" in text
    for name in ("東海精密部品", "さくら内科", "山田会計"):
        assert name not in text


def test_mail_page_shows_the_stored_notification(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.HELPDESK].get("/console/mail").text
    assert "【重大】東海精密部品株式会社 様" in text and "suzuki@tokai-parts.example.jp" in text


def test_audit_page_lists_entries(clients: dict[Role, TestClient]) -> None:
    text = clients[Role.PROVIDER_ADMIN].get("/console/audit").text
    assert "contract.create" in text and "他社" not in text
