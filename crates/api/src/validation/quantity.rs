//! Resource quantities (`500m`, `1Gi`, `1e3`): parsing for validation and
//! comparison.

/// Why a quantity string does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the quantity shape (upstream `ErrFormatWrong`).
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Format,
    /// The number part is malformed (upstream `ErrNumeric`).
    #[error("unable to parse quantity's numeric part")]
    Numeric,
    /// The suffix is unknown (upstream `ErrSuffix`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value does not fit in the range navarch computes with.
    #[error("quantity is too large")]
    TooLarge,
}

/// Parse a quantity into nano-units (`"1"` is 1_000_000_000, `"1m"` is
/// 1_000_000), rounding fractions of a nano-unit up as Kubernetes does.
pub fn parse_quantity(s: &str) -> Result<i128, QuantityError> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        Some(_) => (false, s),
        None => return Err(QuantityError::Format),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() {
        return Err(QuantityError::Format);
    }
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
        return Err(QuantityError::Numeric);
    }
    // exponent of 10 and of 2 contributed by the suffix
    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other => {
            let exp = other.strip_prefix('e').or_else(|| other.strip_prefix('E'));
            match exp {
                Some(e) if !e.is_empty() => {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(QuantityError::Format);
                    }
                    (e.parse::<i64>().map_err(|_| QuantityError::TooLarge)?, 0)
                }
                _ => {
                    if other
                        .bytes()
                        .all(|b| b"eEinumkKMGTP+-0123456789".contains(&b))
                    {
                        return Err(QuantityError::Suffix);
                    }
                    return Err(QuantityError::Format);
                }
            }
        }
    };
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let mut mantissa: i128 = 0;
    for b in digits.bytes() {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or(QuantityError::TooLarge)?;
    }
    let scale = exp10 + 9 - frac_part.len() as i64;
    let mut value = mantissa;
    if scale >= 0 {
        let pow = 10i128.checked_pow(u32::try_from(scale).map_err(|_| QuantityError::TooLarge)?);
        value = pow
            .and_then(|p| value.checked_mul(p))
            .ok_or(QuantityError::TooLarge)?;
    } else if value != 0 {
        let div = u32::try_from(-scale)
            .ok()
            .and_then(|s| 10i128.checked_pow(s));
        value = match div {
            Some(d) => (value + d - 1) / d,
            None => 1,
        };
    }
    value = value
        .checked_mul(1i128 << exp2)
        .ok_or(QuantityError::TooLarge)?;
    Ok(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        assert_eq!(parse_quantity("1"), Ok(1_000_000_000));
        assert_eq!(parse_quantity("500m"), Ok(500_000_000));
        assert_eq!(parse_quantity("0.5"), Ok(500_000_000));
        assert_eq!(parse_quantity(".5"), Ok(500_000_000));
        assert_eq!(parse_quantity("1Ki"), Ok(1024 * 1_000_000_000));
        assert_eq!(parse_quantity("1k"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity("1e3"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity("1E-3"), Ok(1_000_000));
        assert_eq!(parse_quantity("-2"), Ok(-2_000_000_000));
        assert_eq!(parse_quantity("1n"), Ok(1));
        assert_eq!(parse_quantity("0.1n"), Ok(1));
        assert_eq!(parse_quantity("1000m"), parse_quantity("1"));
        assert_eq!(
            parse_quantity("128Mi"),
            Ok(128 * 1024 * 1024 * 1_000_000_000)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_quantity(""), Err(QuantityError::Format));
        assert_eq!(parse_quantity("abc"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1Gb"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1.2.3"), Err(QuantityError::Numeric));
        assert_eq!(parse_quantity("1KiB"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1Mk"), Err(QuantityError::Suffix));
        assert_eq!(parse_quantity("1e"), Err(QuantityError::Suffix));
    }
}
