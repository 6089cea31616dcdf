//! A real headless Chromium for the dashboard's tests, driven over the DevTools protocol
//! (`headless_chrome`): open a page, read what it shows with JavaScript, collect every
//! console error, uncaught exception and failed load, and take a screenshot.
//!
//! Chromium is Debian's `chromium` package (`scripts/test` installs it). Without it a test
//! skips with a loud message, except under CI (`CI` set), where it fails: CI has it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use headless_chrome::{
    browser::tab::Tab,
    protocol::cdp::{types::Event, Page::CaptureScreenshotFormatOption},
    Browser, LaunchOptions,
};

use crate::eventually;

/// Where Chromium is: `$GOLCONDE_CHROMIUM`, else `chromium` on the `PATH`. `None`, after
/// saying so loudly, when there is none and the test may skip.
pub fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("GOLCONDE_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("chromium"))
                    .find(|candidate| candidate.is_file())
            })
        });
    if found.is_none() {
        let why = "no Chromium: neither $GOLCONDE_CHROMIUM nor `chromium` on the PATH \
                   (install Debian's `chromium` package; scripts/test does)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        // Straight to the terminal: the test harness keeps `eprintln!` of a passing test.
        let banner = "!".repeat(78);
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("\n{banner}\nSKIPPED: {why}\n{banner}\n\n").as_bytes(),
        );
    }
    found
}

/// One tab of a headless Chromium of the test's own, closed with it.
pub struct Page {
    tab: Arc<Tab>,
    problems: Arc<Mutex<Vec<String>>>,
    // Dropped last: it ends the browser process.
    _browser: Browser,
}

impl Page {
    /// Starts Chromium at `chromium` with a window of `width`×`height` and opens `url`,
    /// noting every error the page logs from the start.
    pub fn open(chromium: &Path, url: &str, (width, height): (u32, u32)) -> Page {
        let options = LaunchOptions::default_builder()
            .path(Some(chromium.to_path_buf()))
            // Tests run as root in containers, where Chromium's sandbox cannot start.
            .sandbox(false)
            .window_size(Some((width, height)))
            .idle_browser_timeout(Duration::from_secs(600))
            .args(vec![
                std::ffi::OsStr::new("--disable-dev-shm-usage"),
                std::ffi::OsStr::new("--hide-scrollbars"),
            ])
            .build()
            .expect("Chromium's launch options");
        let browser = Browser::new(options).expect("Chromium starts");
        let tab = browser.new_tab().expect("a tab");
        let problems = Arc::new(Mutex::new(Vec::new()));
        let noted = problems.clone();
        tab.add_event_listener(Arc::new(move |event: &Event| {
            if let Some(problem) = problem(event) {
                noted.lock().unwrap().push(problem);
            }
        }))
        .expect("a listener");
        tab.enable_log()
            .and_then(|tab| tab.enable_runtime())
            .expect("the Log and Runtime domains");
        tab.navigate_to(url)
            .and_then(|tab| tab.wait_until_navigated())
            .unwrap_or_else(|e| panic!("Chromium cannot open {url}: {e}"));
        Page {
            tab,
            problems,
            _browser: browser,
        }
    }

    /// The value of the JavaScript expression `expression`, through JSON.
    pub fn eval(&self, expression: &str) -> serde_json::Value {
        let wrapped = format!("JSON.stringify((() => {{ return ({expression}); }})())");
        let result = self
            .tab
            .evaluate(&wrapped, false)
            .unwrap_or_else(|e| panic!("evaluating `{expression}`: {e}"));
        result
            .value
            .as_ref()
            .and_then(|v| v.as_str())
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `condition` (JavaScript) holds on the page.
    pub fn wait_for(&self, condition: &str, timeout: Duration) -> bool {
        eventually(timeout, || {
            self.eval(condition) == serde_json::Value::Bool(true)
        })
    }

    /// The page's text, for messages when something is missing from it.
    pub fn text(&self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every console error, uncaught exception and failed load so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    /// Saves what the window shows as a PNG.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .tab
            .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
            .expect("a screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's folder");
        }
        std::fs::write(path, png).expect("the screenshot written");
    }
}

/// What an event says went wrong, if anything: a `console.error`, an uncaught exception,
/// or an error the browser logged (a failed load, a refused script, a policy violation).
fn problem(event: &Event) -> Option<String> {
    match event {
        Event::RuntimeConsoleAPICalled(e) => {
            let kind = format!("{:?}", e.params.Type).to_ascii_lowercase();
            (kind == "error" || kind == "assert").then(|| {
                let args: Vec<String> = e
                    .params
                    .args
                    .iter()
                    .map(|a| {
                        a.value
                            .as_ref()
                            .map(|v| v.to_string())
                            .or_else(|| a.description.clone())
                            .unwrap_or_default()
                    })
                    .collect();
                format!("console.{kind}: {}", args.join(" "))
            })
        }
        Event::RuntimeExceptionThrown(e) => {
            let details = &e.params.exception_details;
            let what = details
                .exception
                .as_ref()
                .and_then(|x| x.description.clone())
                .unwrap_or_else(|| details.text.clone());
            Some(format!("uncaught exception: {what}"))
        }
        Event::LogEntryAdded(e) => {
            let entry = &e.params.entry;
            let level = format!("{:?}", entry.level).to_ascii_lowercase();
            (level == "error").then(|| {
                format!(
                    "browser log error: {} ({})",
                    entry.text,
                    entry.url.clone().unwrap_or_default()
                )
            })
        }
        _ => None,
    }
}
