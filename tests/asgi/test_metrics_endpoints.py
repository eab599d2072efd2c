"""Every billed API is counted under its own endpoint label, in process (single-process registry)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import Harness

PRO = "doubao-seed-2.0-pro"


async def test_each_billed_api_is_counted_under_its_endpoint_and_admin_routes_by_template(harness: Harness) -> None:
    key_id, key = await harness.create_key("10")
    async with harness.client(key) as client:
        chat = await client.post(
            "/v1/chat/completions", json={"model": PRO, "messages": [{"role": "user", "content": "hi"}]}
        )
        messages = await client.post(
            "/v1/messages",
            json={"model": PRO, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
            headers={"anthropic-version": "2023-06-01"},
        )
        responses = await client.post("/v1/responses", json={"model": PRO, "input": "hi"})
        missing = await client.get("/no/such/path")
    assert (chat.status_code, messages.status_code, responses.status_code, missing.status_code) == (200, 200, 200, 404)
    await harness.key(key_id)
    async with harness.client() as scraper:
        scrape = await scraper.get("/metrics")
    assert scrape.status_code == 200
    counted = {
        (s.labels["endpoint"], s.labels["model"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(scrape.text)
        for s in family.samples
        if s.name == "seedgate_requests_total"
    }
    for endpoint in ("chat.completions", "messages", "responses"):
        assert counted[(endpoint, PRO, "200")] == 1.0, counted
    assert counted[("unmatched", "", "404")] == 1.0
    assert counted[("/admin/keys/{key_id}", "", "200")] == 1.0
