// tests/unit/jinja_cases.h: small templates with the exact text jinja2 renders for them.
//
// Each expectation was derived from jinja2's semantics as transformers configures it, and the
// oracle test (chat_template_oracle_test.cpp) checks every one against Python jinja2 itself when it
// is available, so this table documents jinja2's behaviour rather than our own.
#pragma once

#include "trellis/error.h"

namespace trellis::test {

struct JinjaCase {
  const char* name;
  const char* source;
  const char* context;  // JSON object (insertion order kept)
  const char* expected;
};

// clang-format off
inline const JinjaCase kJinjaCases[] = {
  // --- whitespace control ---
  {"plain_text", "Hello\nworld\n", "{}", "Hello\nworld"},
  {"keeps_inner_trailing_newlines", "a\n\n", "{}", "a\n"},
  {"crlf_normalized", "a\r\nb\rc", "{}", "a\nb\nc"},
  {"trim_blocks", "{% if true %}\nyes\n{% endif %}\nend", "{}", "yes\nend"},
  {"lstrip_blocks", "x\n    {% if true %}\n    y\n    {% endif %}\nz", "{}", "x\n    y\nz"},
  {"lstrip_not_for_variables", "x\n    {{ 'v' }}\n", "{}", "x\n    v"},
  {"lstrip_only_at_line_start", "a {% if true %}b{% endif %}", "{}", "a b"},
  {"minus_strips_both_sides", "a  \n {%- if true -%}  \n b {%- endif %}", "{}", "ab"},
  {"variable_minus", "a \n{{- 'x' -}}\n b", "{}", "axb"},
  {"plus_disables_lstrip", "x\n  {%+ if true %}y{% endif %}", "{}", "x\n  y"},
  {"plus_disables_trim", "{% if true +%}\ny{% endif %}", "{}", "\ny"},
  {"comment_trim_and_lstrip", "a\n  {# note #}\nb", "{}", "a\nb"},
  {"comment_minus", "a   {#- note -#}   b", "{}", "ab"},
  {"raw_block", "{% raw %}{{ not evaluated }}{% endraw %}", "{}", "{{ not evaluated }}"},
  {"trailing_newline_after_tag_kept_once", "{{ 'a' }}\n\n", "{}", "a\n"},
  {"lstrip_after_variable_line", "{{ 'a' }}\n  {% if true %}b{% endif %}", "{}", "a\nb"},
  // --- literals and printing ---
  {"print_none_bool", "{{ none }} {{ true }} {{ False }} {{ None }}", "{}", "None True False None"},
  {"print_numbers", "{{ 1 }} {{ 1.0 }} {{ 1.5e-5 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ 1_000 }} {{ 0x1f }}", "{}",
   "1 1.0 1.5e-05 1e+16 0.30000000000000004 1000 31"},
  {"print_containers", "{{ [1, 'a', none, true, 2.5] }} {{ {'k': \"it's\"} }} {{ (1,) }} {{ () }}", "{}",
   "[1, 'a', None, True, 2.5] {'k': \"it's\"} (1,) ()"},
  {"string_escapes", "{{ 'a\\tb\\\\n\\x41\\u00e9\\'' }}", "{}", "a\tb\\nAé'"},
  {"adjacent_strings_join", "{{ 'a' \"b\" }}", "{}", "ab"},
  {"print_tuple_expression", "{{ 1, 2 }}", "{}", "(1, 2)"},
  // --- undefined ---
  {"undefined_prints_empty", "[{{ missing }}]", "{}", "[]"},
  {"undefined_is_falsy", "{% if missing %}y{% else %}n{% endif %}", "{}", "n"},
  {"missing_key_is_undefined", "{{ d.x is defined }} {{ d['x'] is undefined }}", "{\"d\": {}}", "False True"},
  {"none_attribute_is_undefined", "[{{ n.x }}][{{ n['k'] }}]", "{\"n\": null}", "[][]"},
  {"string_attribute_is_undefined", "{{ s.content is defined }}", "{\"s\": \"text\"}", "False"},
  {"default_filter", "{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }}", "{}", "d None d"},
  {"length_of_undefined", "{{ missing|length }}", "{}", "0"},
  {"iterate_undefined", "{% for x in missing %}x{% else %}empty{% endfor %}", "{}", "empty"},
  // --- operators ---
  {"arithmetic", "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", "{}",
   "3 -4 2 3.5 2.0 1024 0.5"},
  {"unary_binds_tighter_than_pow", "{{ -2 ** 2 }}", "{}", "4"},
  {"concat_tilde", "{{ 'a' ~ 1 ~ none ~ missing ~ 2.0 }}", "{}", "a1None2.0"},
  {"string_repeat_and_list_ops", "{{ 'ab' * 2 }} {{ [1] * 2 }} {{ [1] + [2] }}", "{}", "abab [1, 1] [1, 2]"},
  {"comparisons", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] == [1, 2] }}",
   "{}", "True False True True True True"},
  {"in_operator", "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }} {{ 'x' in missing }}", "{}",
   "True True True True False"},
  {"and_or_return_operands", "{{ none or 'x' }} {{ 0 and 'y' }} {{ 'a' and 'b' }}", "{}", "x 0 b"},
  {"not_precedence", "{{ not 1 == 2 }} {{ not missing is defined }}", "{}", "True True"},
  {"test_binds_before_plus", "{{ 1 + 1 is odd }}", "{}", "2"},
  {"filter_binds_before_plus", "{{ ' a '|trim + 'b' }}", "{}", "ab"},
  {"conditional_expression", "{{ 'y' if true else 'n' }} {{ 'y' if false else 'n' }} [{{ 'y' if false }}]", "{}", "y n []"},
  // --- subscripts and slices ---
  {"indexing", "{{ l[0] }} {{ l[-1] }} {{ l.1 }} [{{ l[9] }}] {{ s[1] }} {{ s[-1] }}", "{\"l\": [1, 2, 3], \"s\": \"héllo\"}",
   "1 3 2 [] é o"},
  {"slicing", "{{ l[1:] }} {{ l[:-1] }} {{ l[::2] }} {{ l[::-1] }} {{ s[::-1] }} {{ s[1:3] }}",
   "{\"l\": [1, 2, 3, 4], \"s\": \"héllo\"}", "[2, 3, 4] [1, 2, 3] [1, 3] [4, 3, 2, 1] olléh él"},
  {"dict_method_shadows_key", "{{ d['items'] }} {{ d.items()|list }}", "{\"d\": {\"items\": 5}}", "5 [('items', 5)]"},
  {"attribute_falls_back_to_item", "{{ m.role }}:{{ m['content'] }}", "{\"m\": {\"role\": \"user\", \"content\": \"hi\"}}", "user:hi"},
  // --- statements ---
  {"if_elif_else", "{% for i in [1, 2, 3] %}{% if i == 1 %}a{% elif i == 2 %}b{% else %}c{% endif %}{% endfor %}", "{}", "abc"},
  {"loop_variables",
   "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
   "{}", "1032TrueFalse3;2121FalseFalse3;3210FalseTrue3;"},
  {"loop_filter", "{% for i in [1, 2, 3, 4] if i is even %}{{ loop.index }}/{{ loop.length }}:{{ i }} {% endfor %}", "{}",
   "1/2:2 2/2:4 "},
  {"loop_else", "{% for i in [] %}x{% else %}none{% endfor %}", "{}", "none"},
  {"loop_prev_next_cycle", "{% for i in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }} {% endfor %}",
   "{}", "-2-a 1-3-b 2--a "},
  {"nested_loops", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }} {% endfor %}{{ loop.index }}|{% endfor %}",
   "{}", "1x1 1y2 1|2x1 2y2 2|"},
  {"dict_iteration", "{% for k in d %}{{ k }}{% endfor %} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
   "{\"d\": {\"b\": 1, \"a\": 2}}", "ba b=1;a=2;"},
  {"break_continue", "{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
   "{}", "023"},
  {"set_scoping_in_loop", "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = i * 10 %}{{ x }},{% endfor %}{{ x }}", "{}",
   "110,120,1"},
  {"set_in_if_is_visible", "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", "{}", "5"},
  {"set_not_carried_between_iterations", "{% for i in [1, 2] %}{% if loop.first %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %}",
   "{}", "[5][]"},
  {"namespace", "{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ ns }}",
   "{}", "6 <Namespace {'n': 6, 's': ''}>"},
  {"tuple_set", "{% set a, b = 1, 'x' %}{{ a }}{{ b }}", "{}", "1x"},
  {"set_block", "{% set body %}  hi {{ 1 }}{% endset %}[{{ body }}]", "{}", "[  hi 1]"},
  {"set_overrides_context", "{% set messages = messages[1:] %}{{ messages|length }}", "{\"messages\": [1, 2, 3]}", "2"},
  {"macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }}",
   "{}", "Hi A! Hi B?"},
  {"filter_block", "{% filter upper %}abc{{ 'd' }}{% endfilter %}", "{}", "ABCD"},
  {"with_block", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", "{}", "3[]"},
  {"generation_tag", "{% generation %}assistant text{% endgeneration %}", "{}", "assistant text"},
  // --- filters ---
  {"string_filters", "{{ '  x  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'aB'|upper }}{{ 'aB'|lower }}|{{ 'hello big-world'|title }}|{{ 'hELLO'|capitalize }}",
   "{}", "x|hi|ABab|Hello Big-World|Hello"},
  {"join_first_last", "{{ [1, 2, 3]|join(', ') }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'abc'|first }} {{ ['a', 'b']|join }}", "{}",
   "1, 2, 3 1 2 a ab"},
  {"replace_filter", "{{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|replace('b', '') }}", "{}", "bba ac"},
  {"numeric_filters", "{{ 3.7|int }} {{ '42'|int }} {{ 'x'|int }} {{ '3.7'|int }} {{ 3|float }} {{ 2.5|round }} {{ 3.5|round }} {{ 3|round }} {{ -3|abs }}",
   "{}", "3 42 0 3 3.0 2.0 4.0 3 3"},
  {"string_filter", "{{ 1|string }} {{ none|string }} {{ [1, 'a']|string }} [{{ missing|string }}]", "{}", "1 None [1, 'a'] []"},
  {"list_filters", "{{ 'ab'|list }} {{ [3, 1, 2]|sort }} {{ ['b', 'A', 'a']|sort }} {{ [1, 1, 2]|unique|list }} {{ [1, 2, 3]|sum }} {{ [1, 3, 2]|max }} {{ ['B', 'a']|min }}",
   "{}", "['a', 'b'] [1, 2, 3] ['A', 'a', 'b'] [1, 2] 6 3 a"},
  {"reverse_filter", "{{ 'abc'|reverse }} {{ [1, 2]|reverse|list }}", "{}", "cba [2, 1]"},
  {"items_and_dictsort", "{{ d|items|list }} {{ d|dictsort }}", "{\"d\": {\"b\": 1, \"a\": 2}}", "[('b', 1), ('a', 2)] [('a', 2), ('b', 1)]"},
  {"select_reject", "{{ [1, 2, 3, 4]|select('odd')|list }} {{ [1, 2, 3]|reject('equalto', 2)|list }} {{ [0, 1, '']|select|list }}",
   "{}", "[1, 3] [1, 3] [1]"},
  {"selectattr_rejectattr",
   "{{ m|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }} {{ m|rejectattr('role', 'equalto', 'user')|list|length }} {{ m|selectattr('c')|list|length }}",
   "{\"m\": [{\"role\": \"user\", \"c\": \"a\"}, {\"role\": \"bot\", \"c\": \"\"}, {\"role\": \"user\", \"c\": \"b\"}]}", "['a', 'b'] 1 2"},
  {"map_filter_name", "{{ ['a', 'b']|map('upper')|join }} {{ [' a ']|map('trim')|list }}", "{}", "AB ['a']"},
  {"indent_filter", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}", "{}", "a\n  b\n\n  c|  a\n  b"},
  {"wordcount_center", "{{ 'hello big world'|wordcount }}[{{ 'ab'|center(6) }}]", "{}", "3[  ab  ]"},
  {"tojson_default", "{{ d|tojson }}", "{\"d\": {\"b\": [1, 2.5, true, null], \"a\": \"é\\\"\\n<\"}}",
   "{\"b\": [1, 2.5, true, null], \"a\": \"é\\\"\\n<\"}"},
  {"tojson_indent", "{{ d|tojson(indent=2) }}", "{\"d\": {\"a\": [1, {}], \"b\": []}}", "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"},
  {"tojson_options", "{{ d|tojson(sort_keys=true) }} {{ d|tojson(separators=(',', ':')) }} {{ 'é'|tojson(ensure_ascii=true) }}",
   "{\"d\": {\"b\": 1, \"a\": 2}}", "{\"a\": 2, \"b\": 1} {\"b\":1,\"a\":2} \"\\u00e9\""},
  {"tojson_string_slice", "{% set out = {'name': 'f'}|tojson %}{{ out[:-1] }}, \"id\": 1}", "{}", "{\"name\": \"f\", \"id\": 1}"},
  // --- generators and views (jinja2's lazy filter results, dict views, range) ---
  {"generator_is_always_truthy", "{% if [2]|select('odd') %}T{% else %}F{% endif %}{% if []|map('upper') %}T{% endif %}", "{}", "TT"},
  {"generator_is_single_pass", "{% set g = [1, 2]|map('string') %}{{ g|list }}{{ g|list }}", "{}", "['1', '2'][]"},
  {"generator_first_consumes", "{% set g = [1, 2, 3]|select %}{{ g|first }}{{ g|list }}", "{}", "1[2, 3]"},
  {"generator_errors_are_lazy", "{% set g = [1, 'a']|map('upper') %}{% set h = 5|select %}ok", "{}", "ok"},
  {"dict_views_print", "{{ d.items() }} {{ d.keys() }} {{ d.values() }} {{ d.items() is sequence }}", "{\"d\": {\"a\": 1}}",
   "dict_items([('a', 1)]) dict_keys(['a']) dict_values([1]) False"},
  {"range_behaves_as_sequence", "{{ range(3)|length }} {{ range(5)[1] }} {{ range(3) is sequence }} {{ range(3)|list }}", "{}",
   "3 1 True [0, 1, 2]"},
  {"reverse_is_an_iterator", "{{ [1, 2]|reverse is sequence }} {{ ([1, 2]|reverse|list)[0] }}", "{}", "False 2"},
  // --- tests ---
  {"type_tests",
   "{{ 's' is string }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ {} is mapping }}{{ [] is iterable }}{{ 's' is iterable }}{{ none is none }}{{ true is boolean }}",
   "{}", "TrueTrueTrueTrueTrueTrueTrueTrueTrue"},
  {"value_tests", "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 'a' is equalto 'a' }}{{ 2 is in [1, 2] }}{{ false is false }}{{ 1 is true }}{{ 'ab' is lower }}",
   "{}", "TrueTrueTrueTrueTrueTrueFalseTrue"},
  {"is_not", "{{ none is not none }} {{ missing is not defined }}", "{}", "False True"},
  // --- methods ---
  {"str_methods",
   "{{ ' a '.strip() }}|{{ 'xhix'.strip('x') }}|{{ '\\n\\na\\n'.lstrip('\\n') }}|{{ 'a\\n'.rstrip() }}|{{ 'ab'.upper() }}|{{ 'AB'.lower() }}|{{ 'they are'.title() }}",
   "{}", "a|hi|a\n|a|AB|ab|They Are"},
  {"str_split", "{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a</think>b'.split('</think>')[-1] }} {{ 'a.b.c'.rsplit('.', 1) }}",
   "{}", "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] b ['a.b', 'c']"},
  {"str_predicates", "{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'abc'.find('c') }} {{ 'a-b'.replace('-', '+') }} {{ '12'.isdigit() }}",
   "{}", "True True 2 a+b True"},
  {"str_format_join", "{{ '{} and {name}'.format(1, name='x') }} {{ ', '.join(['a', 'b']) }}", "{}", "1 and x a, b"},
  {"dict_methods", "{{ d.get('a') }} {{ d.get('z', 0) }} {{ d.get('z') }} {{ d.keys()|list }} {{ d.values()|list }}",
   "{\"d\": {\"a\": 1}}", "1 0 None ['a'] [1]"},
  {"globals", "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ dict(a=1) }} {{ namespace(x=1).x }}", "{}",
   "[0, 1, 2] [1, 3, 5] {'a': 1} 1"},
};

struct JinjaErrorCase {
  const char* name;
  const char* source;
  const char* context;
  ErrorKind kind;
  const char* message_part;  // must occur in the error message
  bool python_fails;         // jinja2 fails on it too (false: valid jinja2 that trellis refuses)
};

inline const JinjaErrorCase kJinjaErrorCases[] = {
  {"raise_exception", "{{ raise_exception('roles must alternate') }}", "{}", ErrorKind::kInvalidArgument,
   "roles must alternate", true},
  {"attribute_of_undefined", "{{ missing.x }}", "{}", ErrorKind::kFormat, "'missing' is undefined", true},
  {"item_of_undefined", "{{ d.x['y'] }}", "{\"d\": {}}", ErrorKind::kFormat, "has no attribute 'x'", true},
  {"str_plus_int", "{{ 'a' + 1 }}", "{}", ErrorKind::kFormat, "concatenate", true},
  {"undefined_arithmetic", "{{ missing + 1 }}", "{}", ErrorKind::kFormat, "undefined", true},
  {"unknown_filter", "{{ 1|nosuchfilter }}", "{}", ErrorKind::kFormat, "nosuchfilter", true},
  {"unknown_tag", "{% frobnicate %}", "{}", ErrorKind::kFormat, "frobnicate", true},
  {"unclosed_if", "{% if true %}x", "{}", ErrorKind::kFormat, "endif", true},
  {"unclosed_tag", "{{ 1 ", "{}", ErrorKind::kFormat, "line 1", true},
  {"sandbox_list_append", "{{ l.append(1) }}", "{\"l\": []}", ErrorKind::kFormat, "unsafe", true},
  {"include_unsupported", "{% include 'x.jinja' %}", "{}", ErrorKind::kUnsupported, "include", true},
  {"call_block_unsupported", "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}", "{}",
   ErrorKind::kUnsupported, "call", false},
  {"recursive_loop_unsupported", "{% for x in [] recursive %}{% endfor %}", "{}", ErrorKind::kUnsupported, "recursive", false},
  {"unsupported_filter", "{{ 'a b'|urlize }}", "{}", ErrorKind::kUnsupported, "urlize", false},
  {"printf_format_unsupported", "{{ '%s' % 1 }}", "{}", ErrorKind::kUnsupported, "printf", false},
  {"namespace_set_on_dict", "{% set d = {} %}{% set d.x = 1 %}", "{}", ErrorKind::kFormat, "non-namespace", true},
  {"break_outside_loop", "{% break %}", "{}", ErrorKind::kFormat, "outside", true},
  {"generator_has_no_length", "{{ [1]|select|length }}", "{}", ErrorKind::kFormat, "len()", true},
  {"deferred_generator_error", "{{ 5|select|list }}", "{}", ErrorKind::kFormat, "not iterable", true},
  {"printing_a_generator", "{{ [1]|map('string') }}", "{}", ErrorKind::kUnsupported, "generator", false},
  {"slice_of_none", "{{ n[1:] }}", "{\"n\": null}", ErrorKind::kFormat, "not subscriptable", true},
  {"int_of_undefined", "{{ missing|int }}", "{}", ErrorKind::kFormat, "undefined", true},
  {"unhashable_in_dict", "{{ [1] in {'a': 1} }}", "{}", ErrorKind::kFormat, "unhashable", true},
};
// clang-format on

}  // namespace trellis::test
