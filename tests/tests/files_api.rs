//! The client file endpoints (`/APP/_kiln/files/...`) end to end: every
//! rule kind allowing and refusing, no key spelling reaching a private
//! file, signed URLs, ranges, conditional requests, and uploads refused
//! while streaming with nothing left behind.

use futures::StreamExt;
use kiln_tests::{Server, call, error_code, examples};
use reqwest::Method;
use serde_json::{Value, json};

const MANIFEST: &str = r#"
[functions.files]
component = "files.wasm"

[[routes]]
path = "/sign/*key"
methods = ["POST"]
function = "files"

[buckets.avatars]
read = "public"
upload = "owner"
replace = "owner"
delete = "owner"
max_size = "1 MiB"
content_types = ["image/*"]
thumbs = ["64x64", "100x0", "50x50f"]

[buckets.private]
read = "owner"
upload = "owner"
replace = "owner"
delete = "owner"

[buckets.staff]
read = "role:staff"
upload = "role:staff"

[buckets.docs]
read = "user"
upload = "user"

[buckets.locked]

[buckets.photos]
read = "user"
upload = "user"
replace = "user"
delete = "user"
max_size = "20 MiB"
thumbs = ["100x100", "120x120", "140x140", "160x160", "180x180", "200x200", "220x220", "240x240", "260x260", "280x280"]
"#;

struct User {
    id: String,
    token: String,
}

async fn server() -> Server {
    let server = Server::start();
    server
        .deploy_ok("shop", MANIFEST, &[("files", &examples().files)])
        .await;
    server
}

async fn sign_up(server: &Server, email: &str) -> User {
    sign_up_in(server, "shop", email).await
}

async fn sign_up_in(server: &Server, app: &str, email: &str) -> User {
    let body = json!({"email": email, "password": "correct horse battery"});
    let (status, tokens) = call(
        server,
        Method::POST,
        &format!("/{app}/_kiln/auth/signup"),
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{tokens}");
    User {
        id: tokens["user"]["id"].as_str().unwrap().to_string(),
        token: tokens["access_token"].as_str().unwrap().to_string(),
    }
}

fn url(server: &Server, path: &str) -> String {
    format!("{}/shop/_kiln/files/{path}", server.url)
}

/// Sends `method` to the file endpoint `path`, as `who` (none: anonymous).
async fn send(
    server: &Server,
    method: Method,
    path: &str,
    who: Option<&User>,
    body: Option<(&str, Vec<u8>)>,
) -> reqwest::Response {
    let mut request = server.client.request(method, url(server, path));
    if let Some(user) = who {
        request = request.bearer_auth(&user.token);
    }
    if let Some((content_type, bytes)) = body {
        request = request.header("content-type", content_type).body(bytes);
    }
    request.send().await.unwrap()
}

async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, error_code(&body).to_string())
}

#[tokio::test]
async fn every_rule_kind_allows_and_refuses_what_it_should() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let bob = sign_up(&server, "bob@example.com").await;
    let png = || Some(("image/png", b"\x89PNG fake".to_vec()));
    let own = format!("avatars/{}/me.png", ada.id);

    // owner: sign-in first, then only under one's own id.
    let put = |who, path: String| {
        let server = &server;
        async move { status_and_code(send(server, Method::PUT, &path, who, png()).await).await }
    };
    assert_eq!(
        put(None, own.clone()).await,
        (401, "sign_in_required".into())
    );
    assert_eq!(
        put(Some(&bob), own.clone()).await,
        (403, "file_access_denied".into())
    );
    assert_eq!(put(Some(&ada), own.clone()).await.0, 201);
    assert_eq!(
        put(Some(&ada), own.clone()).await.0,
        200,
        "replaced by its owner"
    );
    let html = send(
        &server,
        Method::PUT,
        &format!("avatars/{}/x.html", ada.id),
        Some(&ada),
        Some(("text/html", b"<script>".to_vec())),
    )
    .await;
    assert_eq!(
        status_and_code(html).await,
        (415, "content_type_not_allowed".into())
    );

    // public read, cacheable by shared caches.
    let public = send(&server, Method::GET, &own, None, None).await;
    assert_eq!(public.status(), 200);
    assert_eq!(public.headers()["cache-control"], "public, max-age=3600");
    assert_eq!(public.headers()["content-type"], "image/png");
    assert_eq!(public.bytes().await.unwrap().as_ref(), b"\x89PNG fake");
    assert_eq!(
        status_and_code(send(&server, Method::DELETE, &own, Some(&bob), None).await).await,
        (403, "file_access_denied".into())
    );

    // owner read: private.
    let secret = format!("private/{}/secret.txt", ada.id);
    assert_eq!(
        send(
            &server,
            Method::PUT,
            &secret,
            Some(&ada),
            Some(("text/plain", b"ada's secret".to_vec()))
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        status_and_code(send(&server, Method::GET, &secret, None, None).await)
            .await
            .0,
        401
    );
    assert_eq!(
        status_and_code(send(&server, Method::GET, &secret, Some(&bob), None).await).await,
        (403, "file_access_denied".into())
    );
    let mine = send(&server, Method::GET, &secret, Some(&ada), None).await;
    assert_eq!(mine.headers()["cache-control"], "private, no-cache");
    assert_eq!(mine.text().await.unwrap(), "ada's secret");

    // A listing under the owner rule is of one's own folder only.
    let list = |who, prefix: String| {
        let server = &server;
        async move {
            send(
                server,
                Method::GET,
                &format!("private?prefix={prefix}"),
                who,
                None,
            )
            .await
        }
    };
    assert_eq!(list(None, format!("{}/", ada.id)).await.status(), 401);
    assert_eq!(list(Some(&bob), format!("{}/", ada.id)).await.status(), 403);
    assert_eq!(
        list(Some(&bob), String::new()).await.status(),
        403,
        "the whole bucket"
    );
    let listed: Value = list(Some(&ada), format!("{}/", ada.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["files"][0]["key"], format!("{}/secret.txt", ada.id));

    // role: staff only.
    assert_eq!(
        status_and_code(
            send(
                &server,
                Method::PUT,
                "staff/a.txt",
                Some(&ada),
                Some(("text/plain", b"x".to_vec()))
            )
            .await
        )
        .await,
        (403, "missing_role".into())
    );
    let roles = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/apps/shop/users/{}/roles", bob.id),
        )
        .json(&json!({"roles": ["staff"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(roles.status(), 200);
    assert_eq!(
        send(
            &server,
            Method::PUT,
            "staff/a.txt",
            Some(&bob),
            Some(("text/plain", b"x".to_vec()))
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        send(&server, Method::GET, "staff/a.txt", Some(&bob), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        status_and_code(send(&server, Method::GET, "staff/a.txt", Some(&ada), None).await).await,
        (403, "missing_role".into())
    );

    // user: any signed-in user may upload, nobody may replace or delete.
    assert_eq!(
        send(
            &server,
            Method::PUT,
            "docs/a.txt",
            Some(&ada),
            Some(("text/plain", b"v1".to_vec()))
        )
        .await
        .status(),
        201
    );
    assert_eq!(
        status_and_code(
            send(
                &server,
                Method::PUT,
                "docs/a.txt",
                Some(&bob),
                Some(("text/plain", b"v2".to_vec()))
            )
            .await
        )
        .await,
        (403, "file_access_denied".into())
    );
    assert_eq!(
        status_and_code(send(&server, Method::DELETE, "docs/a.txt", Some(&ada), None).await).await,
        (403, "file_access_denied".into())
    );
    assert_eq!(
        send(&server, Method::GET, "docs/a.txt", Some(&bob), None)
            .await
            .text()
            .await
            .unwrap(),
        "v1"
    );

    // No rule: no client. No bucket: 404.
    assert_eq!(
        status_and_code(send(&server, Method::GET, "locked/a.txt", Some(&ada), None).await).await,
        (403, "file_access_denied".into())
    );
    assert_eq!(
        status_and_code(send(&server, Method::GET, "nope/a.txt", None, None).await).await,
        (404, "bucket_not_found".into())
    );

    // The admin API lists a bucket, counts the app's bytes and deletes.
    let listed: Value = server
        .admin(Method::GET, "/admin/v1/apps/shop/files?prefix=docs/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["files"][0]["key"], "docs/a.txt", "{listed}");
    assert_eq!(listed["files"].as_array().unwrap().len(), 1);
    let usage: Value = server
        .admin(Method::GET, "/admin/v1/apps/shop/storage")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // me.png (9 bytes, replaced once), secret.txt (12), staff/a.txt (1), docs/a.txt (2).
    assert_eq!(
        (usage["files"].clone(), usage["bytes"].clone()),
        (json!(4), json!(24)),
        "{usage}"
    );
    let deleted = server
        .admin(Method::DELETE, "/admin/v1/apps/shop/files/docs/a.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        status_and_code(send(&server, Method::GET, "docs/a.txt", Some(&ada), None).await).await,
        (404, "file_not_found".into())
    );

    // The owner deletes; then it is gone.
    assert_eq!(
        send(&server, Method::DELETE, &own, Some(&ada), None)
            .await
            .status(),
        200
    );
    assert_eq!(
        status_and_code(send(&server, Method::GET, &own, None, None).await).await,
        (404, "file_not_found".into())
    );
}

#[tokio::test]
async fn no_spelling_of_a_key_reaches_a_private_file() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let bob = sign_up(&server, "bob@example.com").await;
    let secret = format!("private/{}/secret.txt", ada.id);
    assert_eq!(
        send(
            &server,
            Method::PUT,
            &secret,
            Some(&ada),
            Some(("text/plain", b"TOP SECRET".to_vec()))
        )
        .await
        .status(),
        201
    );
    let id = &ada.id;
    // Fullwidth `ａ` in place of the id's first character, where it is a letter.
    let lookalike: String = id
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 && c.is_ascii_lowercase() {
                char::from_u32(c as u32 - 'a' as u32 + 0xFF41).unwrap()
            } else {
                c
            }
        })
        .collect();
    let spellings = [
        format!("private/{id}%2Fsecret.txt"),
        format!("private/{id}%2fsecret.txt"),
        format!("private%2F{id}%2Fsecret.txt"),
        format!("private/{id}/secret.txt/"),
        format!("private/{id}//secret.txt"),
        format!("private/{id}/%2E/secret.txt"),
        format!("private/%2E%2E/private/{id}/secret.txt"),
        format!("private/{id}%252Fsecret.txt"),
        format!("private/{id}/secret.txt%00"),
        format!("private/{id}/SECRET.TXT"),
        format!("private/{id}/secret.txt%20"),
        format!("private/{lookalike}/secret.txt"),
        format!("private/{}/secret.txt", id.to_uppercase()),
        format!("docs/../private/{id}/secret.txt").replace("..", "%2E%2E"),
        format!("private/{id}\\secret.txt").replace('\\', "%5C"),
    ];
    for spelling in &spellings {
        for who in [None, Some(&bob)] {
            let response = send(&server, Method::GET, spelling, who, None).await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_ne!(
                status,
                200,
                "{spelling} as {:?}: {body}",
                who.map(|u| &u.id)
            );
            assert!(!body.contains("TOP SECRET"), "{spelling}: {body}");
        }
    }
    // The encoded slash is the same key, so its owner reads it that way too.
    let response = send(
        &server,
        Method::GET,
        &format!("private/{id}%2Fsecret.txt"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(response.text().await.unwrap(), "TOP SECRET");
}

#[tokio::test]
async fn signed_urls_work_until_they_expire_and_not_when_tampered_with() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let secret = format!("private/{}/secret.txt", ada.id);
    send(
        &server,
        Method::PUT,
        &secret,
        Some(&ada),
        Some(("text/plain", b"signed bytes".to_vec())),
    )
    .await;
    // Signed by a function, for 2 seconds.
    let (status, signed) = call(
        &server,
        Method::POST,
        &format!("/shop/sign/{secret}?method=GET&expires=2"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let path = signed["url"].as_str().unwrap().to_string();
    assert!(path.starts_with("/_kiln/files/private/"), "{path}");
    let fetch = |path: String| {
        let server = &server;
        async move {
            server
                .client
                .get(format!("{}/shop{path}", server.url))
                .send()
                .await
                .unwrap()
        }
    };
    let ok = fetch(path.clone()).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "signed bytes");
    // Tampered: another signature, another key, a later expiry.
    let signature = path.rsplit_once("signature=").unwrap().1.to_string();
    let flipped = format!(
        "{}{}",
        if signature.starts_with('0') { "1" } else { "0" },
        &signature[1..]
    );
    let expires: u64 = path
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for tampered in [
        path.replace(&signature, &flipped),
        path.replace("secret.txt", "other.txt"),
        path.replace(
            &format!("expires={expires}"),
            &format!("expires={}", expires + 3600),
        ),
        path.split('?').next().unwrap().to_string() + "?expires=99999999999",
    ] {
        let response = fetch(tampered.clone()).await;
        let (status, code) = status_and_code(response).await;
        assert_eq!(status, 403, "{tampered}: {code}");
        assert_eq!(code, "invalid_signature", "{tampered}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        status_and_code(fetch(path).await).await,
        (403, "signature_expired".into())
    );

    // A signed upload: a client without a token stores a file in a bucket
    // whose rule would refuse it.
    let (_, signed) = call(
        &server,
        Method::POST,
        "/shop/sign/docs/from-signed.txt?method=PUT&expires=60",
        None,
        None,
    )
    .await;
    let put = server
        .client
        .put(format!(
            "{}/shop{}",
            server.url,
            signed["url"].as_str().unwrap()
        ))
        .header("content-type", "text/plain")
        .body("uploaded with a signed URL")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    // A GET signature does not allow a PUT.
    let (_, signed) = call(
        &server,
        Method::POST,
        "/shop/sign/docs/from-signed.txt?method=GET&expires=60",
        None,
        None,
    )
    .await;
    let put = server
        .client
        .put(format!(
            "{}/shop{}",
            server.url,
            signed["url"].as_str().unwrap()
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(put).await,
        (403, "invalid_signature".into())
    );

    // A client signs through the endpoint, under the rule of what it asks.
    let mint = |who: Option<&User>| {
        let mut request = server
            .client
            .post(url(&server, &secret))
            .json(&json!({"method": "GET", "expires_in": 60}));
        if let Some(user) = who {
            request = request.bearer_auth(&user.token);
        }
        request.send()
    };
    assert_eq!(mint(None).await.unwrap().status(), 401);
    let minted: Value = mint(Some(&ada)).await.unwrap().json().await.unwrap();
    let response = fetch(minted["url"].as_str().unwrap().to_string()).await;
    assert_eq!(response.text().await.unwrap(), "signed bytes");
    // Outside a declared bucket a function cannot sign.
    let (status, body) = call(
        &server,
        Method::POST,
        "/shop/sign/elsewhere/a.txt?method=GET",
        None,
        None,
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid-input"),
        "{body}"
    );
}

#[tokio::test]
async fn downloads_honour_ranges_and_conditional_requests() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let path = format!("avatars/{}/pic.png", ada.id);
    let bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        send(
            &server,
            Method::PUT,
            &path,
            Some(&ada),
            Some(("image/png", bytes.clone()))
        )
        .await
        .status(),
        201
    );
    let get = |headers: &[(&str, &str)]| {
        let mut request = server.client.get(url(&server, &path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    let full = get(&[]).await.unwrap();
    let etag = full.headers()["etag"].to_str().unwrap().to_string();
    assert!(full.headers().contains_key("last-modified"));
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-length"], "256");
    assert_eq!(
        full.headers()["content-disposition"],
        "inline; filename=\"pic.png\"; filename*=UTF-8''pic.png"
    );
    assert_eq!(full.headers()["x-content-type-options"], "nosniff");

    let part = get(&[("range", "bytes=10-19")]).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 10-19/256");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &bytes[10..20]);
    let suffix = get(&[("range", "bytes=-6")]).await.unwrap();
    assert_eq!(suffix.bytes().await.unwrap().as_ref(), &bytes[250..]);
    let open = get(&[("range", "bytes=200-")]).await.unwrap();
    assert_eq!(open.headers()["content-range"], "bytes 200-255/256");
    let past = get(&[("range", "bytes=256-300")]).await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */256");
    // An If-Range that no longer matches gets the whole file.
    let stale = get(&[("range", "bytes=0-1"), ("if-range", "\"stale\"")])
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    let cached = get(&[("if-none-match", &etag)]).await.unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.unwrap().is_empty());
    let head = server
        .client
        .head(url(&server, &path))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            head.status().as_u16(),
            head.headers()["content-length"].to_str().unwrap()
        ),
        (200, "256")
    );
    // A new version gets a new ETag.
    send(
        &server,
        Method::PUT,
        &path,
        Some(&ada),
        Some(("image/png", vec![1, 2, 3])),
    )
    .await;
    let renewed = get(&[("if-none-match", &etag)]).await.unwrap();
    assert_eq!(renewed.status(), 200);
    assert_ne!(renewed.headers()["etag"].to_str().unwrap(), etag);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_while_streaming_and_leaves_nothing() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let path = format!("avatars/{}/huge.png", ada.id);
    // Declared too large: refused before the body is read.
    let declared = send(
        &server,
        Method::PUT,
        &path,
        Some(&ada),
        Some(("image/png", vec![0; 2 * 1024 * 1024])),
    )
    .await;
    assert_eq!(
        status_and_code(declared).await,
        (413, "file_too_large".into())
    );
    // Streamed without a length: refused once past 1 MiB.
    let chunks =
        futures::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![7u8; 32 * 1024])));
    let streamed = server
        .client
        .put(url(&server, &path))
        .bearer_auth(&ada.token)
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(
            chunks.map(|c| c.map(bytes::Bytes::from)),
        ))
        .send()
        .await;
    match streamed {
        Ok(response) => assert_eq!(
            status_and_code(response).await,
            (413, "file_too_large".into())
        ),
        // The server may close the connection before the client finishes sending.
        Err(err) => eprintln!("the upload was cut off: {err}"),
    }
    assert_eq!(
        status_and_code(send(&server, Method::GET, &path, None, None).await).await,
        (404, "file_not_found".into())
    );
    let blobs = server.data_dir.join("objects/files/shop");
    let left = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "blobs left in {}", blobs.display());
}

/// Starts an upload, sends part of it, cuts a request off midway, and
/// finishes from the offset the server confirmed; the stored file's hash is
/// the original's.
async fn an_interrupted_upload_resumes(server: &Server) {
    let ada = sign_up(server, "ada@example.com").await;
    let size = 19 * 1024 * 1024 + 4321;
    let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 253) as u8).collect();
    let key = format!("{}/video.bin", ada.id);
    let start = |who: Option<&User>, body: Value| {
        let mut request = server
            .client
            .post(format!("{}/shop/_kiln/uploads", server.url))
            .json(&body);
        if let Some(user) = who {
            request = request.bearer_auth(&user.token);
        }
        request.send()
    };
    let body = json!({"bucket": "private", "key": key, "size": size, "content_type": "video/mp4"});
    assert_eq!(
        status_and_code(start(None, body.clone()).await.unwrap())
            .await
            .0,
        401
    );
    let too_big = json!({"bucket": "avatars", "key": format!("{}/a.png", ada.id), "size": 2 << 20, "content_type": "image/png"});
    assert_eq!(
        status_and_code(start(Some(&ada), too_big).await.unwrap()).await,
        (413, "file_too_large".into())
    );
    let started = start(Some(&ada), body).await.unwrap();
    assert_eq!(started.status(), 201);
    let started: Value = started.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_string();
    let upload_url = format!("{}/shop/_kiln/uploads/{id}", server.url);
    let patch = |offset: u64, body: reqwest::Body| {
        server
            .client
            .patch(&upload_url)
            .bearer_auth(&ada.token)
            .header("upload-offset", offset.to_string())
            .body(body)
            .send()
    };
    let offset_now = || async {
        let progress: Value = server
            .client
            .get(&upload_url)
            .bearer_auth(&ada.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        progress["offset"].as_u64().unwrap()
    };

    // The id is 128 random bits, and the upload is Ada's alone: to anyone
    // else, signed in or not, it does not exist.
    assert_eq!(id.len(), 32, "{id}");
    let bob = sign_up(server, "bob@example.com").await;
    for stranger in [None, Some(&bob)] {
        for method in [Method::PATCH, Method::HEAD, Method::GET, Method::DELETE] {
            let mut request = server
                .client
                .request(method.clone(), &upload_url)
                .header("upload-offset", "0")
                .body(vec![9u8; 16]);
            if let Some(user) = stranger {
                request = request.bearer_auth(&user.token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                404,
                "{method} by {:?}",
                stranger.map(|u| &u.id)
            );
        }
    }
    // 9 MiB in one request.
    let first = patch(0, reqwest::Body::from(bytes[..9 << 20].to_vec()))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let confirmed = offset_now().await;
    assert!(confirmed > 0 && confirmed <= 9 << 20, "{confirmed}");
    let wrong = patch(confirmed + 1, reqwest::Body::from(vec![0u8]))
        .await
        .unwrap();
    assert_eq!(
        status_and_code(wrong).await,
        (409, "upload_offset_mismatch".into())
    );
    // The next request dies after 6 MiB.
    let from = confirmed as usize;
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes[from..from + (6 << 20)]
        .chunks(256 * 1024)
        .map(|c| Ok(c.to_vec()))
        .chain([Err(std::io::Error::other("the network went away"))])
        .collect();
    let cut = patch(
        confirmed,
        reqwest::Body::wrap_stream(futures::stream::iter(pieces)),
    )
    .await;
    assert!(cut.is_err() || !cut.unwrap().status().is_success());
    // The failed request lets the upload go once the server sees it end
    // (503 `busy` until then); the rest goes from where the server says.
    let mut last = None;
    for _ in 0..100 {
        let confirmed = offset_now().await;
        assert!(confirmed >= from as u64, "{confirmed} < {from}");
        let rest = bytes[confirmed as usize..].to_vec();
        // A busy answer may come before the body is sent: the send fails.
        let Ok(response) = patch(confirmed, reqwest::Body::from(rest)).await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        match response.status().as_u16() {
            200 => {
                last = Some(response);
                break;
            }
            503 => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            other => panic!("{other}: {}", response.text().await.unwrap()),
        }
    }
    let last = last.expect("the upload stayed busy");
    let done: Value = last.json().await.unwrap();
    assert_eq!(done["offset"], size);
    assert_eq!(done["file"]["size"], size);
    assert_eq!(done["file"]["key"], key.as_str());
    let stored = send(
        server,
        Method::GET,
        &format!("private/{key}"),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(stored.headers()["content-type"], "video/mp4");
    let stored = stored.bytes().await.unwrap();
    use sha2::Digest;
    assert_eq!(sha2::Sha256::digest(&stored), sha2::Sha256::digest(&bytes));
    // Finished: the upload is gone.
    assert_eq!(
        status_and_code(
            server
                .client
                .get(&upload_url)
                .bearer_auth(&ada.token)
                .send()
                .await
                .unwrap()
        )
        .await,
        (404, "upload_not_found".into())
    );

    // An aborted upload leaves nothing.
    let other = json!({"bucket": "private", "key": format!("{}/aborted.bin", ada.id), "size": 100});
    let started: Value = start(Some(&ada), other)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/shop/_kiln/uploads/{}",
        server.url,
        started["id"].as_str().unwrap()
    );
    server
        .client
        .patch(&url)
        .bearer_auth(&ada.token)
        .header("upload-offset", "0")
        .body(vec![1u8; 40])
        .send()
        .await
        .unwrap();
    let as_ada = |request: reqwest::RequestBuilder| request.bearer_auth(&ada.token).send();
    assert_eq!(
        as_ada(server.client.delete(&url)).await.unwrap().status(),
        200
    );
    assert_eq!(as_ada(server.client.get(&url)).await.unwrap().status(), 404);
    let aborted = send(
        server,
        Method::GET,
        &format!("private/{}/aborted.bin", ada.id),
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(aborted.status(), 404);
}

#[tokio::test]
async fn an_interrupted_upload_resumes_to_the_same_bytes_on_the_local_backend() {
    let server = server().await;
    an_interrupted_upload_resumes(&server).await;
    let staging = server.data_dir.join("objects/uploads/shop");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "staging files left in {}", staging.display());
}

#[tokio::test]
async fn an_interrupted_upload_resumes_to_the_same_bytes_on_s3() {
    let Ok(endpoint) = std::env::var("KILN_TEST_S3_ENDPOINT") else {
        eprintln!("KILN_TEST_S3_ENDPOINT is not set: skipping the S3 run");
        return;
    };
    let bucket = std::env::var("KILN_TEST_S3_BUCKET").unwrap_or_else(|_| "kiln-test".into());
    let server = Server::start_with_env(&[
        ("KILN_S3_BUCKET", &bucket),
        ("KILN_S3_ENDPOINT", &endpoint),
        ("KILN_S3_ALLOW_HTTP", "true"),
    ]);
    server
        .deploy_ok("shop", MANIFEST, &[("files", &examples().files)])
        .await;
    an_interrupted_upload_resumes(&server).await;
}

#[tokio::test]
async fn one_apps_stalled_uploads_leave_another_app_uploading() {
    let server = server().await;
    server
        .deploy_ok("other", MANIFEST, &[("files", &examples().files)])
        .await;
    let attacker = sign_up(&server, "mallory@example.com").await;
    let victim_token = sign_up_in(&server, "other", "victim@example.com")
        .await
        .token;
    // Eight uploads that send one byte and then nothing, four from each of
    // two addresses (a client's cap): they hold every write slot of the
    // attacker's app.
    let stalled: Vec<_> = (0..8)
        .map(|i| {
            let client = from_address(if i < 4 { "127.0.0.1" } else { "127.0.0.3" });
            let body = futures::stream::once(async { Ok::<_, std::io::Error>(vec![1u8]) }).chain(
                futures::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
                    Ok(vec![2u8])
                }),
            );
            let request = client
                .put(url(&server, &format!("docs/stalled-{i}.bin")))
                .bearer_auth(&attacker.token)
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(body));
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ninth = from_address("127.0.0.4")
        .put(url(&server, "docs/ninth.bin"))
        .bearer_auth(&attacker.token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let body: Value = ninth.json().await.unwrap();
    assert_eq!(error_code(&body), "busy", "{body}");
    assert!(
        body.to_string().contains("app `shop`"),
        "the app's cap: {body}"
    );
    // The attacker's addresses are at their cap in every app.
    let elsewhere = server
        .client
        .put(format!("{}/other/_kiln/files/docs/theirs.txt", server.url))
        .bearer_auth(&victim_token)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    let body: Value = elsewhere.json().await.unwrap();
    assert!(
        body.to_string()
            .contains("this client is already uploading"),
        "{body}"
    );
    // The other app's users, from their own address, store and read files at once.
    let victim = from_address("127.0.0.2");
    let started = std::time::Instant::now();
    let put = victim
        .put(format!("{}/other/_kiln/files/docs/mine.txt", server.url))
        .bearer_auth(&victim_token)
        .header("content-type", "text/plain")
        .body("still working")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = victim
        .get(format!("{}/other/_kiln/files/docs/mine.txt", server.url))
        .bearer_auth(&victim_token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.text().await.unwrap(), "still working");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "the other app waited {:?}",
        started.elapsed()
    );
    for upload in stalled {
        upload.abort();
    }
}

/// A client whose connections come from `address` (any of 127.0.0.0/8).
fn from_address(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// A JPEG of noise, costly to decode.
fn noisy_jpeg(side: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    let image = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    use image::GenericImageView;
    image::load_from_memory(bytes).unwrap().dimensions()
}

/// The thumbnails kept for the file version `etag` of app `shop`.
fn kept_thumbnails(server: &Server, etag: &str) -> Vec<String> {
    let folder = server.data_dir.join("objects/thumbs/shop").join(etag);
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn thumbnails_are_made_once_in_declared_sizes_and_go_with_their_file() {
    let server = server().await;
    let ada = sign_up(&server, "ada@example.com").await;
    let key = format!("avatars/{}/me.png", ada.id);
    let put = send(
        &server,
        Method::PUT,
        &key,
        Some(&ada),
        Some(("image/png", png(300, 200))),
    )
    .await;
    assert_eq!(put.status(), 201);
    let etag = put.json::<Value>().await.unwrap()["etag"]
        .as_str()
        .unwrap()
        .to_string();

    // Made on the first request, in the size asked; a public bucket's anonymous reader gets it.
    let thumb = send(
        &server,
        Method::GET,
        &format!("{key}?thumb=64x64"),
        None,
        None,
    )
    .await;
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/png");
    assert_eq!(thumb.headers()["cache-control"], "public, max-age=3600");
    let thumb_etag = thumb.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(thumb_etag, format!("\"{etag}-64x64\""));
    let first = thumb.bytes().await.unwrap();
    assert_eq!(dimensions(&first), (64, 64));
    assert_eq!(kept_thumbnails(&server, &etag), ["64x64.png"]);
    let again = send(
        &server,
        Method::GET,
        &format!("{key}?thumb=64x64"),
        None,
        None,
    )
    .await;
    assert_eq!(again.bytes().await.unwrap(), first, "kept, not made again");
    for (size, expected) in [("100x0", (100, 67)), ("50x50f", (50, 33))] {
        let made = send(
            &server,
            Method::GET,
            &format!("{key}?thumb={size}"),
            None,
            None,
        )
        .await;
        assert_eq!(made.status(), 200, "{size}");
        assert_eq!(dimensions(&made.bytes().await.unwrap()), expected, "{size}");
    }
    let not_modified = server
        .client
        .get(url(&server, &format!("{key}?thumb=64x64")))
        .header("if-none-match", &thumb_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);

    // Only declared sizes, only images, only within the caps.
    for size in ["65x65", "64x64f", "0x0", "big", "64x64&thumb=100x0"] {
        let refused = send(
            &server,
            Method::GET,
            &format!("{key}?thumb={size}"),
            None,
            None,
        )
        .await;
        assert_eq!(
            status_and_code(refused).await,
            (400, "thumbnail_size_not_allowed".into()),
            "{size}"
        );
    }
    let text_key = format!("private/{}/notes.txt", ada.id);
    let stored = send(
        &server,
        Method::PUT,
        &text_key,
        Some(&ada),
        Some(("text/plain", b"hi".to_vec())),
    )
    .await;
    assert_eq!(stored.status(), 201);
    let refused = send(
        &server,
        Method::GET,
        &format!("avatars/{}/x.png?thumb=64x64", ada.id),
        None,
        None,
    )
    .await;
    assert_eq!(
        status_and_code(refused).await,
        (404, "file_not_found".into())
    );
    let svg = format!("avatars/{}/logo.svg", ada.id);
    let stored = send(
        &server,
        Method::PUT,
        &svg,
        Some(&ada),
        Some(("image/svg+xml", b"<svg/>".to_vec())),
    )
    .await;
    assert_eq!(stored.status(), 201);
    let refused = send(
        &server,
        Method::GET,
        &format!("{svg}?thumb=64x64"),
        None,
        None,
    )
    .await;
    assert_eq!(
        status_and_code(refused).await,
        (415, "thumbnail_unsupported".into())
    );
    // A PNG header claiming 30000 x 30000 pixels is refused before decoding.
    let mut bomb = png(1, 1);
    bomb[16..20].copy_from_slice(&30_000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&30_000u32.to_be_bytes());
    let crc = png_crc(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let bomb_key = format!("avatars/{}/bomb.png", ada.id);
    assert_eq!(
        send(
            &server,
            Method::PUT,
            &bomb_key,
            Some(&ada),
            Some(("image/png", bomb))
        )
        .await
        .status(),
        201
    );
    let refused = send(
        &server,
        Method::GET,
        &format!("{bomb_key}?thumb=64x64"),
        None,
        None,
    )
    .await;
    let (status, code) = status_and_code(refused).await;
    assert_eq!((status, code.as_str()), (422, "thumbnail_failed"));

    // A private bucket's thumbnails are under its rule.
    let private = format!("private/{}/me.png", ada.id);
    assert_eq!(
        send(
            &server,
            Method::PUT,
            &private,
            Some(&ada),
            Some(("image/png", png(20, 20)))
        )
        .await
        .status(),
        201
    );
    let anonymous = send(
        &server,
        Method::GET,
        &format!("{private}?thumb=64x64"),
        None,
        None,
    )
    .await;
    assert_eq!(anonymous.status(), 401);

    // A new version gets new thumbnails; the old version's go with it, and deleting the file deletes the rest.
    let put = send(
        &server,
        Method::PUT,
        &key,
        Some(&ada),
        Some(("image/png", png(120, 240))),
    )
    .await;
    assert_eq!(put.status(), 200);
    let new_etag = put.json::<Value>().await.unwrap()["etag"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(kept_thumbnails(&server, &etag), Vec::<String>::new());
    let made = send(
        &server,
        Method::GET,
        &format!("{key}?thumb=64x64"),
        None,
        None,
    )
    .await;
    assert_eq!(dimensions(&made.bytes().await.unwrap()), (64, 64));
    assert_eq!(kept_thumbnails(&server, &new_etag), ["64x64.png"]);
    assert_eq!(
        send(&server, Method::DELETE, &key, Some(&ada), None)
            .await
            .status(),
        200
    );
    assert_eq!(kept_thumbnails(&server, &new_etag), Vec::<String>::new());
}

/// PNG's chunk checksum (CRC-32, reflected, polynomial 0xEDB88320).
fn png_crc(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn one_apps_thumbnail_flood_does_not_hold_back_another_apps_thumbnails() {
    let server = server().await;
    server
        .deploy_ok("other", MANIFEST, &[("files", &examples().files)])
        .await;
    let attacker = sign_up(&server, "mallory@example.com").await;
    let victim = sign_up_in(&server, "other", "victim@example.com")
        .await
        .token;
    let small = server
        .client
        .put(format!("{}/other/_kiln/files/photos/small.png", server.url))
        .bearer_auth(&victim)
        .header("content-type", "image/png")
        .body(png(64, 64))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 201);
    // Costly sources, and every declared size of each: 30 thumbnails to make.
    let sources = 3;
    for i in 0..sources {
        let put = send(
            &server,
            Method::PUT,
            &format!("photos/noise-{i}.jpg"),
            Some(&attacker),
            Some(("image/jpeg", noisy_jpeg(1600, i + 1))),
        )
        .await;
        assert_eq!(put.status(), 201);
    }
    let started = std::time::Instant::now();
    let flood: Vec<_> = (0..sources)
        .flat_map(|i| (0..10).map(move |s| (i, 100 + 20 * s)))
        .map(|(i, side)| {
            let request = server
                .client
                .get(url(
                    &server,
                    &format!("photos/noise-{i}.jpg?thumb={side}x{side}"),
                ))
                .bearer_auth(&attacker.token);
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let asked = std::time::Instant::now();
    let thumb = server
        .client
        .get(format!(
            "{}/other/_kiln/files/photos/small.png?thumb=100x100",
            server.url
        ))
        .bearer_auth(&victim)
        .send()
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert_eq!(thumb.status(), 200);
    let mut answered = Vec::new();
    for request in flood {
        answered.push(request.await.unwrap().unwrap());
    }
    let flood_took = started.elapsed();
    eprintln!("victim waited {waited:?}; the flood took {flood_took:?}: {answered:?}");
    assert!(
        answered.iter().all(|s| *s == 200 || *s == 503),
        "the flood's answers: {answered:?}"
    );
    assert!(
        waited * 4 < flood_took && waited < std::time::Duration::from_secs(5),
        "the other app waited {waited:?} while the flood took {flood_took:?}"
    );
}

const RULED_MANIFEST: &str = r#"
[functions.probe]
component = "probe.wasm"

[[routes]]
path = "/probe/:what"
function = "probe"

[buckets.ruled]
read = "function:probe"
upload = "function:probe"
replace = "function:probe"
delete = "function:probe"
"#;

#[tokio::test]
async fn a_function_rule_decides_and_anything_but_true_refuses() {
    let server = Server::start();
    server
        .deploy_ok("rules", RULED_MANIFEST, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up_in(&server, "rules", "ada@example.com").await;
    let at = |path: &str| format!("{}/rules/_kiln/files/ruled/{path}", server.url);
    let put = |path: &str, who: Option<&User>, content_type: &str, body: Vec<u8>| {
        let mut request = server
            .client
            .put(at(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(user) = who {
            request = request.bearer_auth(&user.token);
        }
        request.send()
    };
    let get = |path: &str, who: Option<&User>| {
        let mut request = server.client.get(at(path));
        if let Some(user) = who {
            request = request.bearer_auth(&user.token);
        }
        request.send()
    };

    // Upload: the function sees the caller, the content type and the size.
    assert_eq!(
        put("shared/a.txt", Some(&ada), "text/plain", b"hello".to_vec())
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        put(
            "private/b.txt",
            Some(&ada),
            "text/plain",
            b"secret".to_vec()
        )
        .await
        .unwrap()
        .status(),
        201
    );
    let refused = put("shared/c.png", Some(&ada), "image/png", b"png".to_vec())
        .await
        .unwrap();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(error_code(&body), "file_access_denied", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text of up to 100 bytes"),
        "the function's reason is passed on: {body}"
    );
    let big = put("shared/big.txt", Some(&ada), "text/plain", vec![b'x'; 200])
        .await
        .unwrap();
    assert_eq!(
        status_and_code(big).await,
        (403, "file_access_denied".into())
    );
    let anonymous = put("shared/d.txt", None, "text/plain", b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(
        status_and_code(anonymous).await,
        (403, "file_access_denied".into())
    );

    // Read: shared files for anyone, the rest for editors; roles are read per request.
    let shared = get("shared/a.txt", None).await.unwrap();
    assert_eq!(shared.status(), 200);
    assert_eq!(shared.text().await.unwrap(), "hello");
    assert_eq!(
        status_and_code(get("private/b.txt", None).await.unwrap()).await,
        (403, "file_access_denied".into())
    );
    assert_eq!(
        status_and_code(get("private/b.txt", Some(&ada)).await.unwrap()).await,
        (403, "file_access_denied".into())
    );
    let roles = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/apps/rules/users/{}/roles", ada.id),
        )
        .json(&json!({"roles": ["editor"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(roles.status(), 200);
    let editor = get("private/b.txt", Some(&ada)).await.unwrap();
    assert_eq!(editor.status(), 200);
    assert_eq!(editor.text().await.unwrap(), "secret");
    let listing = server
        .client
        .get(format!(
            "{}/rules/_kiln/files/ruled?prefix=shared/",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200, "a listing asks with its prefix");

    // Truthy is not true; a throw or no answer refuses, and the log says why.
    let delete = server
        .client
        .delete(at("shared/a.txt"))
        .bearer_auth(&ada.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_and_code(delete).await,
        (403, "file_access_denied".into())
    );
    assert_eq!(
        get("shared/a.txt", None).await.unwrap().status(),
        200,
        "still there"
    );
    for path in ["trap/x.txt", "silent/x.txt"] {
        let answer = put(path, Some(&ada), "text/plain", b"x".to_vec())
            .await
            .unwrap();
        assert_eq!(
            status_and_code(answer).await,
            (403, "file_access_denied".into()),
            "{path}"
        );
    }
    let log = server.log();
    assert!(log.contains("did not decide, so it refused"), "{log}");
    // A client cannot reach the rule through a route by sending the trigger's header.
    let spoofed = server
        .client
        .get(format!("{}/rules/probe/files", server.url))
        .header("kiln-trigger", "file-rule")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 200, "the route ran its fetch handler");

    // Deploys: the named function must exist and take HTTP.
    let manifest = RULED_MANIFEST.replace("read = \"function:probe\"", "read = \"function:nope\"");
    let (status, body) = server
        .deploy("rules", &manifest, &[("probe", &examples().js_probe)])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("buckets.ruled.read"),
        "{body}"
    );
    let no_handler = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(no_handler.path(), wat::parse_str("(component)").unwrap()).unwrap();
    let (status, body) = server
        .deploy(
            "rules",
            &RULED_MANIFEST.replace(
                "[[routes]]\npath = \"/probe/:what\"\nfunction = \"probe\"\n",
                "",
            ),
            &[("probe", no_handler.path())],
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_export"),
        "{body}"
    );
    assert!(
        body.to_string().contains("a bucket's rule asks it"),
        "{body}"
    );
}

#[tokio::test]
async fn a_rule_function_that_never_decides_holds_back_only_its_own_app() {
    let server = server().await;
    // The rule's function spins until its timeout, two at a time at most.
    let manifest = RULED_MANIFEST.replace(
        "component = \"probe.wasm\"",
        "component = \"probe.wasm\"\nlimits = { timeout = \"2s\", max_concurrency = 2 }",
    );
    server
        .deploy_ok("rules", &manifest, &[("probe", &examples().js_probe)])
        .await;
    let ada = sign_up(&server, "ada@example.com").await;
    let mine = format!("avatars/{}/me.png", ada.id);
    let put = send(
        &server,
        Method::PUT,
        &mine,
        Some(&ada),
        Some(("image/png", png(8, 8))),
    )
    .await;
    assert_eq!(put.status(), 201);
    let flood: Vec<_> = (0..20)
        .map(|i| {
            let request = server.client.get(format!(
                "{}/rules/_kiln/files/ruled/spin/{i}.txt",
                server.url
            ));
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The other app's public file comes at once, again and again.
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let got = send(&server, Method::GET, &mine, None, None).await;
        assert_eq!(got.status(), 200);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "the other app waited {:?}",
            started.elapsed()
        );
    }
    for request in flood {
        let answer = request.await.unwrap().unwrap();
        assert_eq!(
            status_and_code(answer).await,
            (403, "file_access_denied".into()),
            "a rule that does not decide refuses"
        );
    }
}

#[tokio::test]
async fn a_node_serving_downloads_sees_another_nodes_replace_and_delete_at_once() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), true);
    first
        .deploy_ok("shop", MANIFEST, &[("files", &examples().files)])
        .await;
    let second = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), true);
    let ada = sign_up(&first, "ada@example.com").await;
    let path = "photos/a.txt";
    let put = |server, text: &str| {
        let body = Some(("text/plain", text.as_bytes().to_vec()));
        send(server, Method::PUT, path, Some(&ada), body)
    };
    assert_eq!(put(&first, "one").await.status(), 201);
    // The second node loads the app within a second or so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let got = send(&second, Method::GET, path, Some(&ada), None).await;
        if got.status() == 200 {
            assert_eq!(got.text().await.unwrap(), "one");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second node never served the file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Read again so the second node keeps the record, then change it on the first.
    assert_eq!(
        send(&second, Method::GET, path, Some(&ada), None)
            .await
            .text()
            .await
            .unwrap(),
        "one"
    );
    assert_eq!(put(&first, "two").await.status(), 200);
    let got = send(&second, Method::GET, path, Some(&ada), None).await;
    assert_eq!(
        got.text().await.unwrap(),
        "two",
        "a replaced file is read anew at once"
    );
    assert_eq!(
        send(&first, Method::DELETE, path, Some(&ada), None)
            .await
            .status(),
        200
    );
    let got = send(&second, Method::GET, path, Some(&ada), None).await;
    assert_eq!(status_and_code(got).await, (404, "file_not_found".into()));
}
