//! Content lines → component tree. Tolerant of what real streams hold: several
//! VCALENDARs, text after `END:VCALENDAR`, unclosed or stray END lines, and
//! VEVENTs with no VCALENDAR around them.

use super::lines::ContentLine;

/// Deeper nesting than this is not a calendar; it would only cost stack.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Component {
    /// Uppercased component name (`VCALENDAR`, `VEVENT`, …).
    pub name: String,
    /// Properties directly inside this component, in file order.
    pub props: Vec<ContentLine>,
    pub children: Vec<Component>,
}

impl Component {
    fn new(name: String) -> Self {
        Self { name, ..Self::default() }
    }

    /// The first property with this (uppercase) name.
    pub fn prop(&self, name: &str) -> Option<&ContentLine> {
        self.props.iter().find(|p| p.name == name)
    }

    /// Every property with this (uppercase) name, in file order.
    pub fn props_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ContentLine> {
        self.props.iter().filter(move |p| p.name == name)
    }

    /// Every descendant component with this name, depth first.
    pub fn descendants<'a>(&'a self, name: &str, found: &mut Vec<&'a Component>) {
        for child in &self.children {
            if child.name == name {
                found.push(child);
            }
            child.descendants(name, found);
        }
    }
}

/// Builds the calendars. Components found outside any VCALENDAR are gathered
/// into one synthetic VCALENDAR so their events are still read.
pub(super) fn build_calendars(lines: Vec<ContentLine>, problems: &mut Vec<String>) -> Vec<Component> {
    let mut stack: Vec<Component> = Vec::new();
    let mut top: Vec<Component> = Vec::new();
    let mut too_deep = false;
    // Components closed by an outer END (or by the end of the stream), and stray ENDs.
    let mut unclosed: Vec<String> = Vec::new();
    let mut stray: Vec<String> = Vec::new();
    for line in lines {
        match line.name.as_str() {
            "BEGIN" if stack.len() >= MAX_DEPTH => too_deep = true,
            "BEGIN" => stack.push(Component::new(line.value.trim().to_ascii_uppercase())),
            "END" => close(&mut stack, &mut top, &line.value.trim().to_ascii_uppercase(), &mut unclosed, &mut stray),
            _ => {
                if let Some(current) = stack.last_mut() {
                    current.props.push(line);
                }
            }
        }
    }
    if too_deep {
        problems.push(format!("components nested deeper than {MAX_DEPTH}; inner ones skipped"));
    }
    unclosed.extend(stack.iter().map(|c| c.name.clone()));
    close_all(&mut stack, &mut top);
    for (name, count) in counted(unclosed) {
        problems.push(format!("{count} BEGIN:{name} without END:{name}; closed where the enclosing component ends"));
    }
    for (name, count) in counted(stray) {
        problems.push(format!("{count} END:{name} without BEGIN:{name} ignored"));
    }
    wrap_loose(top)
}

/// Names with how often each occurs, in order of first occurrence.
/// Reports only the first few distinct names: a hostile stream could hold any number.
fn counted(names: Vec<String>) -> Vec<(String, usize)> {
    const MAX_NAMES: usize = 8;
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for name in names {
        match index.get(&name).and_then(|i| counts.get_mut(*i)) {
            Some((_, count)) => *count += 1,
            None => {
                index.insert(name.clone(), counts.len());
                counts.push((name, 1));
            }
        }
    }
    counts.truncate(MAX_NAMES);
    counts
}

/// Pops up to and including the innermost open component called `name`; the
/// components above it were never closed. An END with no matching BEGIN is ignored.
fn close(
    stack: &mut Vec<Component>,
    top: &mut Vec<Component>,
    name: &str,
    unclosed: &mut Vec<String>,
    stray: &mut Vec<String>,
) {
    let Some(depth) = stack.iter().rposition(|c| c.name == name) else {
        stray.push(name.to_string());
        return;
    };
    unclosed.extend(stack.iter().skip(depth + 1).map(|c| c.name.clone()));
    while stack.len() > depth {
        pop_into_parent(stack, top);
    }
}

fn close_all(stack: &mut Vec<Component>, top: &mut Vec<Component>) {
    while !stack.is_empty() {
        pop_into_parent(stack, top);
    }
}

fn pop_into_parent(stack: &mut Vec<Component>, top: &mut Vec<Component>) {
    let Some(done) = stack.pop() else {
        return;
    };
    match stack.last_mut() {
        Some(parent) => parent.children.push(done),
        None => top.push(done),
    }
}

fn wrap_loose(top: Vec<Component>) -> Vec<Component> {
    let (mut calendars, loose): (Vec<_>, Vec<_>) = top.into_iter().partition(|c| c.name == "VCALENDAR");
    if !loose.is_empty() {
        let mut synthetic = Component::new("VCALENDAR".into());
        synthetic.children = loose;
        calendars.push(synthetic);
    }
    calendars
}

#[cfg(test)]
mod tests {
    use super::super::lines::parse_content_line;
    use super::*;

    fn build(text: &str) -> (Vec<Component>, Vec<String>) {
        let lines = text.lines().filter_map(parse_content_line).collect();
        let mut problems = Vec::new();
        (build_calendars(lines, &mut problems), problems)
    }

    fn events(calendars: &[Component]) -> usize {
        calendars
            .iter()
            .map(|c| {
                let mut found = Vec::new();
                c.descendants("VEVENT", &mut found);
                found.len()
            })
            .sum()
    }

    #[test]
    fn structures() {
        let cases: &[(&str, usize, usize, usize)] = &[
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1\nEND:VEVENT\nEND:VCALENDAR\nX-JUNK:1", 1, 1, 0),
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VEVENT\nEND:VCALENDAR\nBEGIN:VCALENDAR\nBEGIN:VEVENT\nEND:VEVENT\nEND:VCALENDAR", 2, 2, 0),
            ("BEGIN:VEVENT\nUID:1\nEND:VEVENT", 1, 1, 0),
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1\nBEGIN:VALARM\nEND:VEVENT\nEND:VCALENDAR", 1, 1, 1),
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1", 1, 1, 2),
            ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1\nEND:VCALENDAR", 1, 1, 1),
            ("BEGIN:VCALENDAR\nEND:VTODO\nBEGIN:VFREEBUSY\nBEGIN:VEVENT\nEND:VEVENT\nEND:VFREEBUSY\nEND:VCALENDAR", 1, 1, 1),
        ];
        for (input, calendars, vevents, nproblems) in cases {
            let (built, problems) = build(input);
            assert_eq!(built.len(), *calendars, "{input}");
            assert_eq!(events(&built), *vevents, "{input}");
            assert_eq!(problems.len(), *nproblems, "{input}");
        }
    }

    #[test]
    fn unclosed_components_are_named() {
        let (_, problems) = build("BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:1\nEND:VCALENDAR\nEND:VEVENT");
        assert_eq!(
            problems,
            [
                "1 BEGIN:VEVENT without END:VEVENT; closed where the enclosing component ends",
                "1 END:VEVENT without BEGIN:VEVENT ignored",
            ]
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = "BEGIN:X\n".repeat(10_000);
        let (built, problems) = build(&text);
        assert_eq!(built.len(), 1);
        assert!(!problems.is_empty());
    }
}
