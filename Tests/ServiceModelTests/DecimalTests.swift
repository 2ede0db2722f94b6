import Testing
@testable import ServiceModel

/// Decimal integers are read from bytes; they must agree with `Int(_:)` wherever it applies.
@Suite struct DecimalTests {
    @Test(arguments: [
        "0", "-0", "+0", "7", "+5", "-12", "00042", "65535", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "-9223372036854775809", "99999999999999999999",
    ])
    func agreesWithInt(text: String) {
        #expect(parseDecimal(text) == Int(text))
    }

    @Test(arguments: ["", "+", "-", "1.0", "1e3", "0x1F", "1_000", " 1", "1 ", "١٢", "--1", "+-1"])
    func refusesAnythingElse(text: String) {
        #expect(parseDecimal(text) == nil)
    }
}
