//! Word error rate, after normalising both sides the same way (case, punctuation, numbers and
//! common abbreviations), as Whisper's English normaliser does for scoring.

/// Hesitations that references and models transcribe inconsistently; Whisper's normaliser drops
/// them on both sides too.
const FILLERS: [&str; 7] = ["um", "uh", "hmm", "mm", "mhm", "mmm", "er"];

/// Lower-cases, drops punctuation (keeping in-word apostrophes) and hesitations, splits
/// hyphenated words and spells out numbers and common abbreviations, returning the words.
pub fn normalise(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let spaced: String = text
        .chars()
        .map(|c| {
            if c == '-' || c == '—' || c == '–' || c == '/' {
                ' '
            } else {
                c
            }
        })
        .collect();
    for raw in spaced.split_whitespace() {
        let lower = raw.to_lowercase();
        if let Some(expansion) = abbreviation(lower.trim_end_matches('.')) {
            words.extend(expansion.split(' ').map(String::from));
            continue;
        }
        let (number_part, suffix) = split_number(&lower);
        if let Some(number) = number_part {
            words.extend(number);
            if let Some(suffix) = suffix {
                words.push(suffix);
            }
            continue;
        }
        let cleaned: String = lower
            .trim_matches(|c: char| !c.is_alphanumeric())
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '’')
            .map(|c| if c == '’' { '\'' } else { c })
            .collect();
        if !cleaned.is_empty() && !FILLERS.contains(&cleaned.as_str()) {
            words.push(cleaned);
        }
    }
    words
}

fn abbreviation(word: &str) -> Option<&'static str> {
    Some(match word {
        "mr" => "mister",
        "mrs" => "missus",
        "ms" => "miss",
        "dr" => "doctor",
        "st" => "saint",
        "vs" => "versus",
        "%" => "percent",
        "&" => "and",
        _ => return None,
    })
}

/// Splits a token like "1455," or "10%" into spelled-out number words and a suffix word.
fn split_number(token: &str) -> (Option<Vec<String>>, Option<String>) {
    let trimmed = token.trim_matches(|c: char| !c.is_alphanumeric() && c != '%');
    let digits: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .collect();
    let digits_only: String = digits.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits_only.is_empty() || digits_only.len() > 12 {
        return (None, None);
    }
    let rest = &trimmed[digits.len()..];
    let suffix = match rest {
        "" => None,
        "%" => Some("percent".to_string()),
        "s" | "th" | "st" | "nd" | "rd" => None,
        _ => return (None, None),
    };
    let Ok(value) = digits_only.parse::<u64>() else {
        return (None, None);
    };
    let ordinal = matches!(rest, "th" | "st" | "nd" | "rd");
    let mut words =
        if !digits.contains(',') && (1100..2000).contains(&value) && value % 100 != 0 && !ordinal {
            // Years are read in pairs: 1455 -> fourteen fifty five.
            let mut pair = spell(value / 100);
            let low = value % 100;
            if low < 10 {
                pair.push("o".into());
            }
            pair.extend(spell(low));
            pair
        } else {
            spell(value)
        };
    if ordinal && let Some(last) = words.pop() {
        words.push(ordinalise(&last));
    }
    (Some(words), suffix)
}

fn ordinalise(word: &str) -> String {
    match word {
        "one" => "first".into(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn spell(value: u64) -> Vec<String> {
    if value < 20 {
        return vec![ONES[value as usize].to_string()];
    }
    if value < 100 {
        let mut words = vec![TENS[(value / 10) as usize].to_string()];
        if !value.is_multiple_of(10) {
            words.push(ONES[(value % 10) as usize].to_string());
        }
        return words;
    }
    for (scale, name) in [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
        (100, "hundred"),
    ] {
        if value >= scale {
            let mut words = spell(value / scale);
            words.push(name.to_string());
            if !value.is_multiple_of(scale) {
                words.extend(spell(value % scale));
            }
            return words;
        }
    }
    unreachable!("every value below 20 or at least 100 is handled above")
}

/// Edit counts between a reference and a hypothesis (after normalisation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordErrors {
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
    pub reference_words: usize,
}

impl WordErrors {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Errors per reference word (0 for an empty reference with an empty hypothesis).
    pub fn rate(&self) -> f64 {
        if self.reference_words == 0 {
            return if self.insertions == 0 { 0.0 } else { 1.0 };
        }
        self.errors() as f64 / self.reference_words as f64
    }
}

impl std::ops::Add for WordErrors {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self {
            substitutions: self.substitutions + other.substitutions,
            deletions: self.deletions + other.deletions,
            insertions: self.insertions + other.insertions,
            reference_words: self.reference_words + other.reference_words,
        }
    }
}

impl std::iter::Sum for WordErrors {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// Levenshtein alignment over normalised words.
pub fn word_errors(reference: &str, hypothesis: &str) -> WordErrors {
    let reference = normalise(reference);
    let hypothesis = normalise(hypothesis);
    let (n, m) = (reference.len(), hypothesis.len());
    // cost[i][j] = (edits, substitutions, deletions, insertions) for prefixes.
    let mut previous: Vec<(usize, usize, usize, usize)> = (0..=m).map(|j| (j, 0, 0, j)).collect();
    for i in 1..=n {
        let mut current = vec![(i, 0, i, 0); m + 1];
        for j in 1..=m {
            let same = reference[i - 1] == hypothesis[j - 1];
            let diagonal = previous[j - 1];
            let substitution = if same {
                diagonal
            } else {
                (diagonal.0 + 1, diagonal.1 + 1, diagonal.2, diagonal.3)
            };
            let deletion = {
                let up = previous[j];
                (up.0 + 1, up.1, up.2 + 1, up.3)
            };
            let insertion = {
                let left = current[j - 1];
                (left.0 + 1, left.1, left.2, left.3 + 1)
            };
            current[j] = [substitution, deletion, insertion]
                .into_iter()
                .min_by_key(|cost| cost.0)
                .expect("three candidates");
        }
        previous = current;
    }
    let (_, substitutions, deletions, insertions) = previous[m];
    WordErrors {
        substitutions,
        deletions,
        insertions,
        reference_words: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_text_has_no_errors_whatever_the_case_and_punctuation() {
        let errors = word_errors("AND SO MY FELLOW AMERICANS", "And so, my fellow Americans.");
        assert_eq!(errors.errors(), 0);
        assert_eq!(errors.reference_words, 5);
    }

    #[test]
    fn counts_substitutions_deletions_and_insertions() {
        let substitution = word_errors("one two three four", "one too three four");
        assert_eq!((substitution.substitutions, substitution.errors()), (1, 1));
        let deletion = word_errors("one two three four", "one three four");
        assert_eq!((deletion.deletions, deletion.errors()), (1, 1));
        let insertion = word_errors("one two three four", "one two three four five");
        assert_eq!((insertion.insertions, insertion.errors()), (1, 1));
        let mixed = word_errors("the cat sat on the mat", "the bat sat on mat today");
        assert_eq!(mixed.errors(), 3);
        assert!((mixed.rate() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn numbers_and_abbreviations_match_spelled_out_references() {
        assert_eq!(
            word_errors("GO FORWARD TEN METERS", "Go forward 10 meters.").errors(),
            0
        );
        assert_eq!(
            word_errors("AND MISTER JOHN DASHWOOD", "And Mr. John Dashwood").errors(),
            0
        );
        assert_eq!(
            word_errors("OF ABOUT FOURTEEN FIFTY FIVE", "of about 1455.").errors(),
            0
        );
        assert_eq!(
            word_errors("FORTY TWO LINE BIBLE", "42-line Bible").errors(),
            0
        );
        assert_eq!(
            word_errors("THE FIFTEENTH CENTURY", "the 15th century").errors(),
            0
        );
        // British "and" inside numbers is one deletion, not a mismatch of every word.
        assert_eq!(word_errors("TWO THOUSAND AND EIGHT", "2008").errors(), 1);
    }

    #[test]
    fn hesitations_are_ignored() {
        assert_eq!(
            word_errors("BUT UM MONTREAL UH", "But Montreal.").errors(),
            0
        );
    }

    #[test]
    fn keeps_in_word_apostrophes() {
        assert_eq!(
            normalise("Nation's future, don't"),
            vec!["nation's", "future", "don't"]
        );
    }

    #[test]
    fn empty_hypothesis_deletes_every_word() {
        let errors = word_errors("one two three", "");
        assert_eq!(errors.deletions, 3);
        assert_eq!(errors.rate(), 1.0);
    }
}
