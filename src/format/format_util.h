// format/format_util.h: strict JSON parsing and message helpers shared by the format readers.
//
// Goals: one place that turns any JSON text into either a nlohmann::json or a trellis::Error of
// kind kFormat naming the file; duplicate object keys (which nlohmann would silently resolve to
// the last one) and absurd nesting are rejected before they can reach a caller. Internal to
// src/format/; not part of the API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace trellis::format_detail {

// Parses `text` as one JSON value. Throws kFormat "<path>: <what>: ..." on a syntax error,
// invalid UTF-8, a duplicate key in any object, or nesting deeper than `max_depth`.
nlohmann::json parse_json_strict(std::string_view text, const std::string& path, std::string_view what,
                                 int max_depth);

// A string from an untrusted file made safe to embed in a message: safe_quote, non-printable bytes
// as \xNN, cut after `max_len` bytes with "...".
std::string safe_quote(std::string_view s, size_t max_len = 200);

// nlohmann's type name with an article-free spelling ("string", "number", "object", ...);
// integers and floating-point numbers are told apart.
std::string json_type_name(const nlohmann::json& j);

// Byte size of a tensor, or nullopt if a dim is negative or any prefix product of the element
// count (the order shape_numel() multiplies in) or the byte count overflows int64.
std::optional<uint64_t> checked_nbytes(const Shape& shape, DType dtype);

}  // namespace trellis::format_detail
