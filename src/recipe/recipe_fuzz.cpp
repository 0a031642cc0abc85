// Fuzz target: the recipe parser must accept or reject any text without crashing, every
// rejection must carry a message, and platform selection and interpolation must not crash on
// what it accepts.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "canopy/recipe/interpolate.hpp"
#include "canopy/recipe/recipe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // `.json` file names take the strict JSON parser.
  if (auto j = canopy::recipe::parse_recipe(text, "fuzz.json"); !j && j.error().message.empty()) std::abort();
  auto r = canopy::recipe::parse_recipe(text, "fuzz.yaml");
  if (!r) {
    if (r.error().message.empty()) std::abort();
    return 0;
  }
  const canopy::recipe::Platform platform{{"os", "linux"}, {"architecture", "amd64"}};
  auto s = canopy::recipe::select_manifest(*r, platform);
  if (!s && s.error().message.empty()) std::abort();
  if (s) {
    canopy::recipe::Variables vars;
    vars.thing_name = "thing";
    vars.configuration = r->default_configuration;
    auto lc = canopy::recipe::interpolate(s->lifecycle, vars, "fuzz");
    if (!lc && lc.error().message.empty()) std::abort();
  }
  for (const auto& d : r->dependencies) (void)d.requirement.satisfies(r->version);
  return 0;
}
