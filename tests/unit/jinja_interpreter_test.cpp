// Interpreter features on small templates, against the literal text jinja2 renders (jinja_cases.h).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/jinja_text.h"
#include "unit/jinja_cases.h"

namespace trellis {
namespace {

std::string render(const char* source, const char* context) {
  return ChatTemplate::parse(source).render(nlohmann::ordered_json::parse(context));
}

TEST(ChatTemplateInterpreter, CasesMatchJinja2) {
  for (const test::JinjaCase& c : test::kJinjaCases) {
    SCOPED_TRACE(c.name);
    try {
      EXPECT_EQ(render(c.source, c.context), c.expected) << "template: " << c.source;
    } catch (const Error& e) {
      ADD_FAILURE() << "threw: " << e.what() << "\ntemplate: " << c.source;
    }
  }
}

TEST(ChatTemplateInterpreter, ErrorCases) {
  for (const test::JinjaErrorCase& c : test::kJinjaErrorCases) {
    SCOPED_TRACE(c.name);
    try {
      const std::string out = render(c.source, c.context);
      ADD_FAILURE() << "rendered instead of failing: " << out;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), c.kind) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
    }
  }
}

TEST(ChatTemplateInterpreter, ErrorsNameThePosition) {
  try {
    render("line one\n{% for m in messages %}\n  {{ m.x.y }}\n{% endfor %}", R"({"messages": [{}]})");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("line 3"), std::string::npos) << e.what();
  }
  try {
    render("ok\n{% include 'other' %}", "{}");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("include"), std::string::npos) << e.what();
  }
}

TEST(ChatTemplateInterpreter, PrintingAFunctionIsRefused) {
  EXPECT_THROW(render("{{ range }}", "{}"), Error);
}

TEST(ChatTemplateInterpreter, StrftimeNowFormatsTheLocalDate) {
  const std::string year = render("{{ strftime_now('%Y') }}", "{}");
  ASSERT_EQ(year.size(), 4u);
  EXPECT_GE(std::stoi(year), 2024);
}

TEST(ChatTemplateInterpreter, PythonFloatRepr) {
  using jinja::py_format_float;
  EXPECT_EQ(py_format_float(1.0), "1.0");
  EXPECT_EQ(py_format_float(-0.0), "-0.0");
  EXPECT_EQ(py_format_float(100.0), "100.0");
  EXPECT_EQ(py_format_float(0.0001), "0.0001");
  EXPECT_EQ(py_format_float(0.00001), "1e-05");
  EXPECT_EQ(py_format_float(1e16), "1e+16");
  EXPECT_EQ(py_format_float(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(py_format_float(1.5e300), "1.5e+300");
  EXPECT_EQ(py_format_float(0.1 + 0.2), "0.30000000000000004");
}

TEST(ChatTemplateInterpreter, PythonStringRepr) {
  using jinja::py_repr_string;
  EXPECT_EQ(py_repr_string("a"), "'a'");
  EXPECT_EQ(py_repr_string("it's"), "\"it's\"");
  EXPECT_EQ(py_repr_string("both ' and \""), "'both \\' and \"'");
  EXPECT_EQ(py_repr_string("tab\there\n\x01"), "'tab\\there\\n\\x01'");
  EXPECT_EQ(py_repr_string("é 日本 \xc2\xa0"), "'é 日本 \\xa0'");
}

TEST(ChatTemplateInterpreter, InvalidUtf8SurvivesUnchanged) {
  // nlohmann's parser rejects invalid UTF-8, but messages built in C++ can carry it.
  const std::string bad = "a\xff\xfe b";
  EXPECT_EQ(jinja::utf8_encode(jinja::utf8_decode(bad)), bad);
  EXPECT_EQ(jinja::py_strip(bad, jinja::StripSide::kBoth, std::nullopt), bad);
  const ChatTemplate t = ChatTemplate::parse("{{ messages[0].content|trim }}|{{ messages[0].content[1:] }}");
  EXPECT_EQ(t.apply({{"user", " " + bad + " "}}, false, "", ""), bad + "|" + bad + " ");
}

}  // namespace
}  // namespace trellis
