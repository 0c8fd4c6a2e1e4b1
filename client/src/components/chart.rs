//! Messages per second over the last 60 s, as an SVG line: a view
//! function, not a component (see the counters' module docs: no state, and
//! about 1 KB of yew's code less in the wasm).

use std::collections::VecDeque;

use yew::prelude::*;

use crate::console::{CHART_SECONDS, fixed};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 120.0;
/// `0 0 WIDTH HEIGHT`, written out: a constant needs no `format!` at each
/// render (the test below checks it against the two).
const VIEW_BOX: &str = "0 0 600 120";

/// The chart of `history`: messages per second, oldest first, at most
/// [`CHART_SECONDS`].
pub fn rate_chart(history: &VecDeque<u64>) -> Html {
    let max = history.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = WIDTH / (CHART_SECONDS - 1) as f64;
    let offset = CHART_SECONDS - history.len();
    let points: Vec<String> = history
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let x = (offset + i) as f64 * step;
            let y = HEIGHT - (v as f64 / max) * (HEIGHT - 10.0);
            format!("{},{}", fixed(x, 1), fixed(y, 1))
        })
        .collect();
    html! {
        <figure class="panel chart">
            <svg data-testid="chart" viewBox={VIEW_BOX} preserveAspectRatio="none"
                role="img" aria-label="messages per second over the last 60 seconds">
                <polyline points={points.join(" ")} />
            </svg>
            <figcaption>{ format!("messages per second, last 60 s (peak {})", fixed(max, 0)) }</figcaption>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_box_is_the_chart_size() {
        assert_eq!(VIEW_BOX, format!("0 0 {} {}", WIDTH as u32, HEIGHT as u32));
    }
}
