//! `--config FILE` through the real binary: command line over environment
//! over file over default, and an unknown key refused at start-up with its
//! name. The `token` subcommand is the witness: the token it prints carries
//! the configured issuer and audience.

use std::path::PathBuf;
use std::process::{Command, Output};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const SECRET: &str = "a-development-secret-of-32-bytes!";

/// A config file in the temporary directory, removed on drop.
struct File(PathBuf);

impl File {
    fn with(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "server-config-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("a temp file");
        Self(path)
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The binary with `args`, and `JWT_ISSUER` set to `env_issuer` (or unset).
fn server(args: &[impl AsRef<std::ffi::OsStr>], env_issuer: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    command
        .args(args)
        .env_remove("JWT_SECRET")
        .env_remove("JWT_SECRET_FILE")
        .env_remove("JWT_AUDIENCE")
        .env_remove("SERVER_CONFIG");
    match env_issuer {
        Some(issuer) => command.env("JWT_ISSUER", issuer),
        None => command.env_remove("JWT_ISSUER"),
    };
    command.output().expect("the server binary runs")
}

/// The issuer and audience of the token the binary printed.
fn claims(output: &Output) -> (String, String) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("a token signed with the file's secret");
    let field = |name: &str| data.claims[name].as_str().unwrap_or_default().to_owned();
    (field("iss"), field("aud"))
}

#[test]
fn the_command_line_beats_the_environment_which_beats_the_file() {
    let file = File::with(
        "precedence",
        &format!(
            "jwt_secret = \"{SECRET}\"\njwt_issuer = \"from-file\"\njwt_audience = \"file-audience\"\n"
        ),
    );
    let path = file.0.display().to_string();
    let token = ["token", "--sub", "alice"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        ["--config", path.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .chain(token)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        claims(&server(&with(&[]), None)),
        ("from-file".into(), "file-audience".into())
    );
    assert_eq!(
        claims(&server(&with(&[]), Some("from-env"))),
        ("from-env".into(), "file-audience".into())
    );
    assert_eq!(
        claims(&server(
            &with(&["--jwt-issuer", "from-cli"]),
            Some("from-env")
        )),
        ("from-cli".into(), "file-audience".into())
    );
}

#[test]
fn an_unknown_key_stops_the_start_and_is_named() {
    let file = File::with("unknown", "push_intervall = \"1s\"\n");
    let output = server(&["--config".to_owned(), file.0.display().to_string()], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`push_intervall`"), "{stderr}");
}

#[test]
fn the_development_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/development.toml");
    let config = server::Config::load_from(["server", "--config", path]).expect("it loads");
    let chat = config
        .namespaces
        .of("chat:lobby")
        .expect("a chat namespace");
    assert!(
        chat.anonymous
            .allows(server::channels::namespace::Capability::Publish)
    );
}
