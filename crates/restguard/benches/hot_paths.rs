//! The functions on every authenticated request, measured in isolation:
//! header parsing, key digests, the Token check (cached), the JWT check (cached and not),
//! and Basic decoding. `cargo bench -p restguard`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use restguard::{
    basic::decode_credentials,
    digest::SecretDigester,
    jwt::{JwtService, JwtSettings},
    token::{TokenCheck, TokenService},
};
use restguard_core::{
    store::{NewUser, Stores},
    RequestContext,
};
use restguard_store::memory::MemoryStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn header_parsing(c: &mut Criterion) {
    let (parts, _) = http::Request::builder()
        .header(
            "authorization",
            "Token rg_2k6BEELlXcNKO-vj2_1umkRkPiwmg4GnhnAavJnE0iA",
        )
        .body(())
        .unwrap()
        .into_parts();
    c.bench_function("authorization header: parse + keyword match", |b| {
        b.iter(|| {
            let ctx = RequestContext::new(black_box(&parts), None).unwrap();
            black_box(ctx.credentials(&["Token"], true));
        })
    });
    c.bench_function("basic: decode credentials", |b| {
        b.iter(|| black_box(decode_credentials(black_box(b"YWxpY2U6cHctYWxpY2UtMTIz"))))
    });
}

fn digests(c: &mut Criterion) {
    let digester = SecretDigester::new([7; 32]);
    c.bench_function("token key digest (HMAC-SHA-256)", |b| {
        b.iter(|| {
            black_box(digester.digest(black_box("rg_2k6BEELlXcNKO-vj2_1umkRkPiwmg4GnhnAavJnE0iA")))
        })
    });
}

fn token_check(c: &mut Criterion) {
    let rt = runtime();
    let (service, key) = rt.block_on(async {
        let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
        let user = stores
            .users
            .create_user(NewUser::new("bench"))
            .await
            .unwrap();
        let service = TokenService::new(
            stores.tokens.clone(),
            SecretDigester::new([7; 32]),
            Duration::from_secs(3600),
        );
        let issued = service.issue(user.id, "", None).await.unwrap();
        (service, issued.key.expose().to_owned())
    });
    c.bench_function("token check (cache hit)", |b| {
        b.iter(|| {
            let check = rt.block_on(service.check(black_box(&key))).unwrap();
            assert!(matches!(check, TokenCheck::Valid(_)));
        })
    });
}

fn jwt_check(c: &mut Criterion) {
    let rt = runtime();
    let (service, access) = rt.block_on(async {
        let stores = Stores::from_backend(Arc::new(MemoryStore::new()));
        let user = stores
            .users
            .create_user(NewUser::new("bench"))
            .await
            .unwrap();
        let service = JwtService::new(
            stores.users.clone(),
            stores.jwt.clone(),
            stores.signing_keys.clone(),
            SecretDigester::new([7; 32]),
            JwtSettings::default(),
        )
        .await
        .unwrap();
        let pair = service.issue_pair(&user).await.unwrap();
        (service, pair.access)
    });
    c.bench_function("jwt HS256 access check (verified-token cache hit)", |b| {
        b.iter(|| {
            rt.block_on(service.authenticate(black_box(&access)))
                .map_err(|_| ())
                .unwrap();
        })
    });
}

criterion_group!(benches, header_parsing, digests, token_check, jwt_check);
criterion_main!(benches);
