//! One server-rendered SVG bar chart for every energy (and later money) series: a y axis with
//! its unit and three labelled gridlines, a fixed slot per hour or day so the x axis means the
//! same thing on every meter, a bar with its value on hover for each slot that has data, and a
//! visible gap (dashed outline, "no data") where a slot has none — never a zero that was not
//! measured. Plain SVG in the HTML: it needs no JavaScript and scales to a 360-px screen.
//! Heights come from integer arithmetic on Wh; labels are formatted from integers.

use leptos::prelude::*;
use powertab_core::kernel::money::format_wh_as_kwh;
use serde::{Deserialize, Serialize};

/// One slot of the x axis.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChartSlot {
    /// The axis label (`14`, `11-28`).
    pub label: String,
    /// What hovering says of the slot (`2026-11-28 14:00`).
    pub title: String,
    /// The slot's value in Wh; `None`: no data for it.
    pub value_wh: Option<i64>,
}

/// The axis maximum: the smallest 1, 2 or 5 × 10ⁿ Wh at or above `peak_wh` (at least 100 Wh,
/// so a quiet meter's bars are not blown up to full height).
pub fn axis_max_wh(peak_wh: i64) -> i64 {
    let mut step: i64 = 100;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= peak_wh || candidate == i64::MAX {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

const SLOT_W: i64 = 20;
const BAR_W: i64 = 14;
const LEFT: i64 = 44;
const TOP: i64 = 8;
const PLOT_H: i64 = 100;
const BOTTOM: i64 = 22;

/// Height in SVG units of `value_wh` on an axis up to `max_wh` (integer, rounded down; a
/// positive value is at least 1 so it stays visible).
pub fn bar_height(value_wh: i64, max_wh: i64) -> i64 {
    if value_wh <= 0 || max_wh <= 0 {
        return 0;
    }
    let h = i128::from(value_wh.min(max_wh)) * i128::from(PLOT_H) / i128::from(max_wh);
    i64::try_from(h).unwrap_or(PLOT_H).max(1)
}

/// The SVG width of a chart of `slots` slots.
fn chart_width(slots: usize) -> i64 {
    LEFT + i64::try_from(slots).unwrap_or(0).max(1) * SLOT_W + 4
}

/// The y axis: gridlines at the maximum, half of it and 0, each labelled in kWh.
fn grid_lines(max: i64, width: i64) -> impl IntoView {
    let base = TOP + PLOT_H;
    [max, max / 2, 0].map(|wh| {
        let y = base - bar_height(wh, max).max(if wh == 0 { 0 } else { 1 });
        view! {
            <line x1=LEFT y1=y x2=width - 4 y2=y class="grid"/>
            <text x=LEFT - 4 y=y + 4 class="y-label" text-anchor="end">{format_wh_as_kwh(wh)}</text>
        }
    })
}

/// A bar chart of `slots` in kWh. `label_every` thins the x labels (every slot labelled is too
/// dense for 24 hours on a phone); `no_data` is the translated word for gaps.
#[component]
pub fn EnergyChart(
    id: &'static str,
    slots: Vec<ChartSlot>,
    label_every: usize,
    no_data: String,
) -> impl IntoView {
    let peak = slots.iter().filter_map(|s| s.value_wh).max().unwrap_or(0);
    let max = axis_max_wh(peak);
    let width = chart_width(slots.len());
    let height = TOP + PLOT_H + BOTTOM;
    let base = TOP + PLOT_H;
    let grid = grid_lines(max, width);
    let every = label_every.max(1);
    let bars = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            let x = LEFT + i64::try_from(i).unwrap_or(0) * SLOT_W + (SLOT_W - BAR_W) / 2;
            let label = (i % every == 0).then(|| {
                view! {
                    <text x=x + BAR_W / 2 y=base + 14 class="x-label" text-anchor="middle">{slot.label.clone()}</text>
                }
            });
            let mark = match slot.value_wh {
                Some(wh) => {
                    let h = bar_height(wh, max);
                    let title = format!("{} · {} kWh", slot.title, format_wh_as_kwh(wh));
                    view! {
                        <rect x=x y=base - h width=BAR_W height=h class="bar"><title>{title}</title></rect>
                    }
                    .into_any()
                }
                None => {
                    let title = format!("{} · {}", slot.title, no_data);
                    view! {
                        <rect x=x y=TOP width=BAR_W height=PLOT_H class="gap"><title>{title}</title></rect>
                    }
                    .into_any()
                }
            };
            view! { <g>{mark}{label}</g> }
        })
        .collect_view();
    view! {
        <svg id=id class="chart" viewBox=format!("0 0 {width} {height}") role="img"
            preserveAspectRatio="xMinYMin meet">
            <text x=2 y=TOP + 4 class="unit">"kWh"</text>
            {grid}
            {bars}
        </svg>
    }
}

/// One slot of a stacked chart: its parts in Wh, bottom first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackSlot {
    pub label: String,
    pub title: String,
    pub parts_wh: Vec<i64>,
}

/// A stacked bar chart in kWh: each slot's parts (the TOU periods) one on another, each with
/// its CSS class (`p-sharp` …) and, on hover, its name and value; a legend under it names the
/// classes. The axis fits the tallest total. Slots with nothing are drawn empty (a day without
/// use is a real 0 here: charge lines exist only for what was used).
#[component]
pub fn StackedEnergyChart(
    id: &'static str,
    slots: Vec<StackSlot>,
    label_every: usize,
    /// (CSS class, translated name) per part.
    parts: Vec<(&'static str, String)>,
) -> impl IntoView {
    let peak = slots
        .iter()
        .map(|s| s.parts_wh.iter().fold(0i64, |a, b| a.saturating_add(*b)))
        .max()
        .unwrap_or(0);
    let max = axis_max_wh(peak);
    let width = chart_width(slots.len());
    let height = TOP + PLOT_H + BOTTOM;
    let base = TOP + PLOT_H;
    let grid = grid_lines(max, width);
    let every = label_every.max(1);
    let names = parts.clone();
    let bars = slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            let x = LEFT + i64::try_from(i).unwrap_or(0) * SLOT_W + (SLOT_W - BAR_W) / 2;
            let label = (i % every == 0).then(|| {
                view! {
                    <text x=x + BAR_W / 2 y=base + 14 class="x-label" text-anchor="middle">{slot.label.clone()}</text>
                }
            });
            // Heights from the running total, so rounding never makes a stack taller than its sum.
            let mut below_wh = 0i64;
            let pieces = slot
                .parts_wh
                .iter()
                .enumerate()
                .filter(|(_, wh)| **wh > 0)
                .map(|(p, wh)| {
                    let bottom = bar_height(below_wh, max);
                    below_wh = below_wh.saturating_add(*wh);
                    let top = bar_height(below_wh, max).max(bottom + 1);
                    let (class, name) = names.get(p).cloned().unwrap_or(("bar", String::new()));
                    let title = format!("{} · {name} {} kWh", slot.title, format_wh_as_kwh(*wh));
                    view! {
                        <rect x=x y=base - top width=BAR_W height=top - bottom class=format!("bar {class}")><title>{title}</title></rect>
                    }
                })
                .collect_view();
            view! { <g class="stack">{pieces}{label}</g> }
        })
        .collect_view();
    let legend = parts
        .into_iter()
        .map(|(class, name)| view! { <span class="legend-item"><i class=format!("swatch {class}")></i>{name}</span> })
        .collect_view();
    view! {
        <figure class="stacked">
            <svg id=id class="chart" viewBox=format!("0 0 {width} {height}") role="img"
                preserveAspectRatio="xMinYMin meet">
                <text x=2 y=TOP + 4 class="unit">"kWh"</text>
                {grid}
                {bars}
            </svg>
            <figcaption class="legend">{legend}</figcaption>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_is_a_round_number_at_or_above_the_peak() {
        assert_eq!(axis_max_wh(0), 100);
        assert_eq!(axis_max_wh(100), 100);
        assert_eq!(axis_max_wh(101), 200);
        assert_eq!(axis_max_wh(4_300), 5_000);
        assert_eq!(axis_max_wh(5_001), 10_000);
        assert_eq!(axis_max_wh(120_000), 200_000);
        assert!(axis_max_wh(i64::MAX) >= i64::MAX / 2);
    }

    #[test]
    fn bars_are_proportional_integers_and_never_vanish() {
        assert_eq!(bar_height(5_000, 5_000), PLOT_H);
        assert_eq!(bar_height(2_500, 5_000), PLOT_H / 2);
        assert_eq!(bar_height(1, 5_000), 1, "a small value stays visible");
        assert_eq!(bar_height(0, 5_000), 0);
        assert_eq!(bar_height(-5, 5_000), 0);
        assert_eq!(bar_height(i64::MAX, i64::MAX), PLOT_H);
    }
}
