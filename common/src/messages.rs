//! Text for people: "did you mean …?" for configuration and job-file keys (the known key closest
//! to a typo), and I/O errors without their "(os error N)" suffix.

/// The known key within two edits of `key`, the closest one, if any.
pub fn closest(known: &[&'static str], key: &str) -> Option<&'static str> {
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// An I/O error's text without the "(os error N)" suffix, for messages read by people.
pub fn io_message(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(index) if text.ends_with(')') => text[..index].to_owned(),
        _ => text,
    }
}

/// Levenshtein distance between two short strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(previous + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_closest_key() {
        let keys = ["split", "output", "payload"];
        assert_eq!(closest(&keys, "splt"), Some("split"));
        assert_eq!(closest(&keys, "outptu"), Some("output"));
        assert_eq!(closest(&keys, "banana"), None);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn io_messages_drop_os_error_codes() {
        let error = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_message(&error), "No such file or directory");
        let custom = std::io::Error::other("disk on fire");
        assert_eq!(io_message(&custom), "disk on fire");
    }
}
