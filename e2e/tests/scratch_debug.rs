use anyhow::Result;
use e2e::{Browser, dist_dir};
use testbed::Testbed;

const JS: &str = r#"const done = arguments[0]; const seen = []; const t0 = Date.now();
      const errs = window.__errs || []; window.__errs = errs; if (!window.__hooked) { window.__hooked = 1; const oe = console.error; console.error = (...a) => { errs.push(a.map(String).join(' ')); oe(...a); }; }
      const tick = () => navigator.locks.query().then(q => { const s = JSON.stringify(q.held.map(h => h.name)) + JSON.stringify(q.pending.map(h => h.name)) + ' ' + (document.querySelector('[data-testid=tab-role]')?.textContent) + ' ' + document.querySelector('[data-testid=state]')?.textContent; if (seen.length == 0 || seen[seen.length-1][1] != s) seen.push([Date.now()-t0, s]); if (Date.now() - t0 < 3000) setTimeout(tick, 20); else done(JSON.stringify({seen, errs})); }); tick();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug() -> Result<()> {
    let testbed = Testbed::start(Some(&dist_dir()?)).await?;
    let browser = Browser::start().await?;
    let url = format!("{}/?share=1", testbed.http_base);
    browser.client.goto(&url).await?;
    let first = browser.client.window().await?;
    let w = browser.client.new_window(false).await?;
    browser.client.switch_to_window(w.handle.clone()).await?;
    browser.client.goto(&url).await?;
    for _ in 0..2 {
        for h in [first.clone(), w.handle.clone()] {
            browser.client.switch_to_window(h).await?;
            let r = browser.client.execute_async(JS, vec![]).await?;
            println!("trace: {r}");
        }
    }
    Ok(())
}
