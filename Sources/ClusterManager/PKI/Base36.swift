/// Base-36 (`0-9a-z`) text of big-endian unsigned integers, as Docker writes join-token parts.
enum Base36 {
    static let alphabet: [UInt8] = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    /// The number `bytes` (big-endian) in base 36, left-padded with `0` to `width` characters.
    static func encode(_ bytes: [UInt8], width: Int) -> String {
        var number = bytes
        var digits: [UInt8] = []
        while number.contains(where: { $0 != 0 }) {
            var remainder = 0
            for index in number.indices {
                let accumulator = remainder * 256 + Int(number[index])
                number[index] = UInt8(accumulator / 36)
                remainder = accumulator % 36
            }
            digits.append(alphabet[remainder])
        }
        while digits.count < width { digits.append(UInt8(ascii: "0")) }
        return String(decoding: digits.reversed(), as: UTF8.self)
    }

    /// Whether every character of `text` is in `0-9a-z`.
    static func isBase36(_ text: Substring) -> Bool {
        text.utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) }
    }
}
