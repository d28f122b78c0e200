use super::line::*;
use super::*;

fn line() -> LineChart {
    LineChart {
        title: "Heap over time".into(),
        x_label: "time (ms)".into(),
        y_label: "memory (KiB)".into(),
        series: vec![
            Series {
                name: "server heap".into(),
                points: vec![(0.0, 10.0), (5.0, 300.0), (10.0, 12.0)],
            },
            Series {
                name: "binary <refc> & co".into(),
                points: vec![(0.0, 1.0), (10.0, 2.0)],
            },
        ],
        events: vec![
            Event {
                x: 5.0,
                label: "manual GC".into(),
            },
            Event {
                x: 9.0,
                label: "exit".into(),
            },
        ],
    }
}

#[test]
fn line_svg_names_every_series_and_event() {
    let svg = line().to_svg().unwrap();
    assert!(svg.starts_with("<svg"));
    for text in ["Heap over time", "time (ms)", "memory (KiB)", "server heap"] {
        assert!(svg.contains(text), "missing {text}");
    }
    // Labels are XML-escaped, not injected.
    assert!(svg.contains("binary &lt;refc&gt; &amp; co"));
    assert!(svg.contains(">\nmanual GC\n<") || svg.contains(">manual GC<"));
    assert!(svg.contains("exit"));
    // Two series lines plus the two event markers are paths/polylines.
    assert!(svg.matches("<polyline").count() >= 4);
}

#[test]
fn bars_svg_has_labels_and_values() {
    let chart = BarChart {
        title: "Throughput".into(),
        y_label: "msgs/s".into(),
        bars: vec![("plain".into(), 1200.0), ("hibernate".into(), 300.5)],
    };
    let svg = chart.to_svg().unwrap();
    for text in [
        "Throughput",
        "msgs/s",
        "plain",
        "hibernate",
        "1200",
        "300.5",
    ] {
        assert!(svg.contains(text), "missing {text}");
    }
    assert!(svg.matches("<rect").count() >= 3); // background + 2 bars
}

#[test]
fn bars_fill_the_plot_with_no_empty_slot() {
    for n in [1usize, 3, 5] {
        let chart = BarChart {
            title: "t".into(),
            y_label: "y".into(),
            bars: (0..n)
                .map(|i| (format!("b{i}"), 5364807.0 + i as f64))
                .collect(),
        };
        let svg = chart.to_svg().unwrap();
        // The bars: filled rects in the first palette colour.
        let fill = format!(
            "fill=\"#{:02X}{:02X}{:02X}\"",
            PALETTE[0].0, PALETTE[0].1, PALETTE[0].2
        );
        let bars: Vec<(f64, f64)> = svg
            .split("<rect")
            .skip(1)
            .filter(|r| r.contains(&fill))
            .map(|r| {
                let attr = |k: &str| -> f64 {
                    let a = r.split(&format!(" {k}=\"")).nth(1).unwrap();
                    a.split('"').next().unwrap().parse().unwrap()
                };
                (attr("x"), attr("width"))
            })
            .collect();
        assert_eq!(bars.len(), n, "{svg}");
        let right = bars.iter().map(|(x, w)| x + w).fold(0.0, f64::max);
        let width = bars[0].1;
        // Right of the last bar: its own slot's margin, not another empty slot.
        assert!(
            f64::from(WIDTH) - right < width,
            "n={n}: right edge {right}, bar {width}"
        );
        assert!(svg.contains("5.365M") && !svg.contains("5364807"));
    }
}

#[test]
fn writes_file_creating_parents() {
    let dir = std::env::temp_dir().join(format!("binscope_chart_{}", std::process::id()));
    let path = dir.join("a/b/chart.svg");
    line().write(&path).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("server heap"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rejects_bad_input() {
    let mut c = line();
    c.series[0].points.push((f64::NAN, 1.0));
    assert!(matches!(c.to_svg(), Err(ChartError::NonFinite)));

    let mut c = line();
    c.events[0].x = f64::INFINITY;
    assert!(matches!(c.validate(), Err(ChartError::NonFinite)));

    let c = LineChart {
        series: vec![Series {
            name: "x".into(),
            points: vec![],
        }],
        ..LineChart::default()
    };
    assert!(matches!(c.validate(), Err(ChartError::Empty)));
    assert!(matches!(
        BarChart::default().validate(),
        Err(ChartError::Empty)
    ));

    let mut c = line();
    c.title = "x".repeat(MAX_TEXT + 1);
    assert!(matches!(c.validate(), Err(ChartError::TooLarge)));

    let b = BarChart {
        bars: vec![("a".into(), f64::NEG_INFINITY)],
        ..BarChart::default()
    };
    assert!(matches!(b.validate(), Err(ChartError::NonFinite)));
}

#[test]
fn degenerate_ranges_still_draw() {
    // One point, negative values, a single bar: no panic, a real chart.
    let c = LineChart {
        series: vec![Series {
            name: "one".into(),
            points: vec![(3.0, -2.0)],
        }],
        ..LineChart::default()
    };
    assert!(c.to_svg().unwrap().contains("one"));
    let b = BarChart {
        bars: vec![("neg".into(), -5.0)],
        ..BarChart::default()
    };
    assert!(b.to_svg().unwrap().contains("neg"));
}

#[test]
fn io_error_is_reported() {
    let c = line();
    let err = c.write(Path::new("/proc/binscope/none.svg")).unwrap_err();
    assert_eq!(err.name(), "io");
}

#[test]
fn short_labels() {
    assert_eq!(short(0.0), "0");
    assert_eq!(short(1200.0), "1200");
    assert_eq!(short(1.5), "1.5");
    assert_eq!(short(0.1 + 0.2), "0.3");
    assert_eq!(short(-2.25), "-2.25");
    assert_eq!(short(12345678.0), "12.35M");
    assert_eq!(short(5364807.0), "5.365M");
    assert_eq!(short(53648.0), "53.65k");
    assert_eq!(short(9999.0), "9999");
    assert_eq!(short(-2.5e9), "-2.5G");
}

#[test]
fn event_labels_never_overlap_and_repeats_merge() {
    let ev = |x: f64, l: &str| Event {
        x,
        label: l.to_string(),
    };
    let events = vec![
        ev(0.0, "major GC"),
        ev(1.0, "major GC"),
        ev(2.0, "major GC"),
        ev(3.0, "burst"),
        ev(50.0, "flush"),
        ev(99.0, "exit"),
    ];
    let placed = place_labels(&events, (0.0, 100.0), 200.0, 60.0);
    let texts: Vec<&str> = placed.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts, ["major GC x3", "burst", "flush", "exit"]);
    // "burst" starts inside "major GC x3": another row.
    assert_ne!(placed[0].row, placed[1].row);
    // Near the right edge the label goes left of its event, below the legend's rows.
    let exit = &placed[3];
    assert!(exit.start < 0.99);
    assert!(exit.row as f64 * ROW_PX >= 60.0 || exit.start + 0.05 < 1.0 - 210.0 / PLOT_W);
    for (i, a) in placed.iter().enumerate() {
        for b in &placed[i + 1..] {
            if a.row == b.row {
                let wa = a.text.chars().count() as f64 * LABEL_CHAR_PX / PLOT_W;
                let wb = b.text.chars().count() as f64 * LABEL_CHAR_PX / PLOT_W;
                assert!(
                    a.start + wa <= b.start || b.start + wb <= a.start,
                    "{a:?} {b:?}"
                );
            }
        }
    }
}
