// Must not compile: SkipHardClips depends_on GradNormClip (a user kind), which is not listed before it.
#include "../user_policy.hpp"
steadyloss::Stabilizer<user::SkipHardClips, user::GradNormClip> guard;
