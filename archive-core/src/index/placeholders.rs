//! `$n` placeholder lists for statements built at run time (IN lists, multi-row VALUES), and
//! the list columns' text form. Statements themselves live with the methods that run them.

/// `$first, $first+1, …` (`count` placeholders).
pub(super) fn placeholder_list(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(|n| format!("${n}")).collect();
    list.join(", ")
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` placeholders each (multi-row INSERT).
pub(super) fn values_placeholders(rows: usize, columns: usize) -> String {
    values_placeholders_from(1, rows, columns)
}

/// [`values_placeholders`] numbered from `$first`.
pub(super) fn values_placeholders_from(first: usize, rows: usize, columns: usize) -> String {
    let list: Vec<String> = (0..rows)
        .map(|row| format!("({})", placeholder_list(first + row * columns, columns)))
        .collect();
    list.join(", ")
}

/// ` AND <alias>.modality IN (…) AND <alias>.source_ae IN (…)` for the non-empty lists of a
/// rule's series filters, numbering placeholders from `first`; returns the clause and the
/// values to bind, in order.
pub(super) fn series_filter(
    alias: &str,
    modalities: &[String],
    calling_aes: &[String],
    first: usize,
) -> (String, Vec<String>) {
    let mut clause = String::new();
    let mut binds: Vec<String> = Vec::new();
    for (column, values) in [("modality", modalities), ("source_ae", calling_aes)] {
        if values.is_empty() {
            continue;
        }
        clause.push_str(&format!(
            " AND {alias}.{column} IN ({})",
            placeholder_list(first + binds.len(), values.len())
        ));
        binds.extend(values.iter().cloned());
    }
    (clause, binds)
}

/// A backslash-separated list column (modalities, calling AE titles) as its values.
pub(super) fn split_list(text: String) -> Vec<String> {
    text.split('\\')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_number_in_increasing_order() {
        assert_eq!(
            super::values_placeholders(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(super::placeholder_list(2, 3), "$2, $3, $4");
    }
}
