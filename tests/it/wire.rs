//! The wire format over real HTTP: line splitting, JSON data, what clients rebuild.

use serde_json::json;

use crate::support::TestServer;

#[tokio::test]
async fn data_lines_split_on_crlf_lf_and_cr_and_rebuild_with_lf() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["w"], None).await;
    let cases = [
        ("one\r\ntwo\rthree\nfour", "one\ntwo\nthree\nfour"),
        ("", ""),
        ("  leading spaces", "  leading spaces"),
        ("trailing newline\n", "trailing newline\n"),
        ("data: looks like a field\n\nid: 1", "data: looks like a field\n\nid: 1"),
        ("ünïcödé ✓", "ünïcödé ✓"),
        (": not a comment", ": not a comment"),
    ];
    for (sent, _) in cases {
        server.publish("w", None, json!(sent)).await;
    }
    for (sent, rebuilt) in cases {
        assert_eq!(stream.next_event().await.data, rebuilt, "{sent:?}");
    }
}

#[tokio::test]
async fn json_data_is_sent_compact_with_key_order_and_numbers_preserved() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["w"], None).await;
    let body = r#"{"stream":"w","data":{ "z": 1, "a": [1.50, 12345678901234567890123], "s": "x y" }}"#;
    let response = server
        .http
        .post(server.url("/events"))
        .bearer_auth(server.token(&[], &["*"]))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        stream.next_event().await.data,
        r#"{"z":1,"a":[1.50,12345678901234567890123],"s":"x y"}"#
    );
}

#[tokio::test]
async fn each_event_carries_its_id_and_type_on_the_wire() {
    let server = TestServer::start_default().await;
    let response = server.get_events(&["raw"], server.token(&["*"], &[])).await;
    let id = server.publish("raw", Some("tick"), json!("a\nb")).await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    use futures::StreamExt;
    while !text.contains("\n\nid") && !text.ends_with("data: b\n\n") {
        let chunk = crate::support::within("raw bytes", body.next()).await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("retry: 3000\n:"), "{text:?}");
    assert!(
        text.ends_with(&format!("id: {id}\nevent: tick\ndata: a\ndata: b\n\n")),
        "{text:?}"
    );
}
