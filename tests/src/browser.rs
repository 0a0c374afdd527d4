//! A real headless Chromium, driven over WebDriver by a chromedriver this test starts on
//! 127.0.0.1. Debian's `chromium` and `chromium-driver` packages (scripts/test.sh installs
//! them); `TASKER_TEST_CHROMIUM` and `TASKER_TEST_CHROMEDRIVER` name other binaries.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// A chromedriver process and a browser session on it; both end when dropped (the session
/// should be closed with [`Browser::close`] first).
pub struct Browser {
    driver: Child,
    /// The WebDriver session.
    pub client: Client,
}

fn binary(variable: &str, default: &str) -> String {
    let path = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's chromium and chromium-driver (scripts/test.sh does), or set {variable}"
    );
    path
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session, 1280×900.
    pub async fn start() -> Self {
        let chromium = binary("TASKER_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = binary("TASKER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let status = format!("{base}/status");
        let http = reqwest::Client::new();
        crate::eventually("chromedriver to be ready", Duration::from_secs(30), || {
            let request = http.get(&status).send();
            async move {
                let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
                body["value"]["ready"].as_bool().filter(|ready| *ready)
            }
        })
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&base)
            .await
            .expect("start a Chromium session");
        Self { driver, client }
    }

    /// The text of the first element `css` finds, once one is there (a click's navigation
    /// may still be loading the page it leads to).
    pub async fn text(&self, css: &str) -> String {
        crate::eventually(
            &format!("an element {css}"),
            Duration::from_secs(15),
            || async {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                element.text().await.ok()
            },
        )
        .await
    }

    /// Waits until the first element `css` finds reads `expected`.
    pub async fn wait_text(&self, css: &str, expected: &str) {
        crate::eventually(
            &format!("{css} to read {expected:?}"),
            Duration::from_secs(15),
            || async {
                let element = self.client.find(Locator::Css(css)).await.ok()?;
                element.text().await.ok().filter(|text| text == expected)
            },
        )
        .await;
    }

    /// Clicks the first element `css` finds.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
            .click()
            .await
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// Saves a screenshot of the page as `target/dashboard/<name>.png`; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| crate::workspace_root().join("target"))
            .join("dashboard");
        std::fs::create_dir_all(&dir).expect("create target/dashboard");
        let path = dir.join(format!("{name}.png"));
        let png = self.client.screenshot().await.expect("take a screenshot");
        std::fs::write(&path, png).expect("save the screenshot");
        path
    }

    /// Ends the session (and with it the browser).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
