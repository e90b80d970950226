//! Parsing of Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`) into integers,
//! exactly (no floating point) and rounding up like upstream's `Value()`/`MilliValue()`.

/// A quantity string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}")]
pub struct QuantityError(pub String);

/// Parse `s` and return its value multiplied by `scale` (1 for plain units, 1000 for
/// milli-units), rounded up to an integer.
pub fn parse_scaled(s: &str, scale: i128) -> Result<i64, QuantityError> {
    let err = || QuantityError(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(err());
    }
    let (neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    // Split the number from the suffix.
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." {
        return Err(err());
    }
    let mut mant: i128 = 0;
    let mut frac_digits: u32 = 0;
    let mut seen_dot = false;
    for c in num.chars() {
        if c == '.' {
            if seen_dot {
                return Err(err());
            }
            seen_dot = true;
            continue;
        }
        let d = i128::from(c.to_digit(10).ok_or_else(err)?);
        if mant > i128::MAX / 100 {
            return Err(err());
        }
        mant = mant * 10 + d;
        if seen_dot {
            frac_digits += 1;
        }
    }
    // (numerator multiplier, base-10 exponent)
    let (mult, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other if other.starts_with(['e', 'E']) => {
            let e: i32 = other[1..].parse().map_err(|_| err())?;
            if !(-30..=30).contains(&e) {
                return Err(err());
            }
            (1, e)
        }
        _ => return Err(err()),
    };
    let exp = exp10 - i32::try_from(frac_digits).map_err(|_| err())?;
    let mut numer = mant.checked_mul(mult).ok_or_else(err)?;
    numer = numer.checked_mul(scale).ok_or_else(err)?;
    let mut denom: i128 = 1;
    if exp >= 0 {
        numer = numer
            .checked_mul(10i128.checked_pow(exp.unsigned_abs()).ok_or_else(err)?)
            .ok_or_else(err)?;
    } else {
        denom = 10i128.checked_pow(exp.unsigned_abs()).ok_or_else(err)?;
    }
    let mut v = numer / denom;
    if numer % denom != 0 {
        v += 1; // round up, as upstream does
    }
    if neg {
        v = -v;
    }
    i64::try_from(v).map_err(|_| err())
}

/// The value of a quantity in milli-units (CPU), rounded up.
pub fn milli_value(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 1000)
}

/// The value of a quantity in whole units (bytes, counts), rounded up.
pub fn value(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(milli_value("500m").unwrap(), 500);
        assert_eq!(milli_value("1").unwrap(), 1000);
        assert_eq!(milli_value("0.1").unwrap(), 100);
        assert_eq!(milli_value("1.5").unwrap(), 1500);
        assert_eq!(milli_value("100u").unwrap(), 1); // rounds up
        assert_eq!(milli_value("2e3").unwrap(), 2_000_000);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(value("1Gi").unwrap(), 1 << 30);
        assert_eq!(value("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(value("128974848").unwrap(), 128_974_848);
        assert_eq!(value("129M").unwrap(), 129_000_000);
        assert_eq!(value("123Mi").unwrap(), 123 * 1024 * 1024);
        assert_eq!(value("1k").unwrap(), 1000);
        assert_eq!(value("1m").unwrap(), 1); // 0.001 rounds up to 1
        assert_eq!(value("-1").unwrap(), -1);
    }

    #[test]
    fn invalid_quantities() {
        for s in ["", "abc", "1.2.3", "1Qi", ".", "1e"] {
            assert!(value(s).is_err(), "{s} should be invalid");
        }
    }
}
